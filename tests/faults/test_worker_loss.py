"""A whole worker killed in each stage, with the default reconcile interval and time limits: the
run is resumed within the goal of issue 8 item 6 (under 90 s), not after the stage's hard time
limit (30 minutes for a build by default), and completes.

Three runs sit in three stages at once (a build that sleeps, a test that sleeps, a versions-file
push the git remote holds); the build, test and promote workers are killed together with
`kill -9` (main process, pool, their subprocesses) and restarted, as a supervisor would. Their
unacknowledged messages come back only after the broker's visibility timeout (an hour with
these limits): what brings each run home is the lapsed lease and the reconciler.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from shared.constants import LEASE_HEARTBEAT_S, LEASE_TTL_S
from shared.events import RunResumed
from shared.testing.system import ARTIFACTS, System, running
from tests.conftest import BASE_IMAGE, REGISTRY
from tests.faults.images import bare_remote, define_quick

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

GOAL_S = 90.0  # issue 8 item 6: a whole-worker kill is resumed in under 90 s with defaults
HOOK_SLEEP_S = 25  # the git remote holds every versions-file push this long
SLOW_DOCKERFILE = """ARG BASE
FROM ${BASE}
ARG VERSION
RUN echo "$VERSION" > /version && sleep 25
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[System, Path]]:
    root = tmp_path_factory.mktemp("loss")
    suffix = uuid.uuid4().hex[:8]
    prefix = f"freshen-faults-{suffix}"
    images = root / "images"
    index = "http://127.0.0.1:9/pypi"  # runs are started with a version: never asked
    build = define_quick(images, "loss-build", index, BASE_IMAGE, f"{prefix}/build")
    (build / "Dockerfile").write_text(SLOW_DOCKERFILE)
    define_quick(images, "loss-test", index, BASE_IMAGE, f"{prefix}/test", test_sleep_s=40)
    define_quick(images, "loss-promote", index, BASE_IMAGE, f"{prefix}/promote", test_sleep_s=0)
    markers = root / "markers"
    remote = bare_remote(root / "versions.git", HOOK_SLEEP_S, markers)
    env = {  # every reconcile, lease and time-limit setting at its default
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(images),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_GIT_URL": f"file://{remote}",
        "FRESHEN_GIT_WORKDIR": str(root / "git-work"),
        "FRESHEN_CHECK_INTERVAL_S": "3600",
    }
    with running("loss", env) as system:
        yield system, markers


def _seconds(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def _pushes(markers: Path) -> int:
    return len(list(markers.iterdir()))


def test_whole_worker_kills_in_build_test_and_promote_resume_within_the_goal(
    rig: tuple[System, Path],
) -> None:
    system, markers = rig
    version = f"1.0.{int(time.time())}"  # a new build argument: the slow RUN is not cached
    promoting = system.rebuild("loss-promote", version)
    system.wait_event("loss-promote", promoting, "BuildSucceeded", 120)
    testing = system.rebuild("loss-test", version)
    system.wait_event("loss-test", testing, "BuildSucceeded", 120)
    building = system.rebuild("loss-build", version)
    system.wait_event("loss-build", building, "BuildStarted", 120)
    system.wait_event("loss-test", testing, "TestStarted", 120)
    system.wait_event("loss-promote", promoting, "Promoted", 120)
    deadline = time.monotonic() + 60
    while _pushes(markers) < 1:
        assert time.monotonic() < deadline, "the versions-file push never reached the remote"
        time.sleep(0.05)

    killed = {stage: system.kill_worker(stage) for stage in ("build", "test", "promote")}

    runs = {"build": ("loss-build", building), "test": ("loss-test", testing),
            "promote": ("loss-promote", promoting)}  # fmt: skip
    outcome = {"BuildSucceeded": "build", "TestsPassed": "test", "VersionsCommitted": "promote"}
    figures: dict[str, dict[str, float]] = {}
    for stage, (image, run_id) in runs.items():
        run = system.wait_terminal(image, run_id, timeout_s=240)
        assert run.status == "done", run.error
        records = system.records(image, run_id)
        # The kill landed inside the stage: its outcome came only after the kill.
        ends = [_seconds(r.at) for r in records if outcome.get(r.type) == stage]
        assert ends and min(ends) > killed[stage], (stage, records)
        resumed = [
            _seconds(r.at)
            for r in records
            if isinstance(r.event, RunResumed) and r.event.stage == stage
        ]
        assert resumed, f"{stage}: the run finished without being resumed: {records}"
        figures[stage] = {
            "kill_to_resumed_s": round(resumed[0] - killed[stage], 1),
            "kill_to_done_s": round(_seconds(records[-1].at) - killed[stage], 1),
        }
    print(json.dumps(figures, indent=2))
    (ARTIFACTS / "faults-worker-loss.json").write_text(json.dumps(figures, indent=2) + "\n")
    for stage, figure in figures.items():
        # Not before the lease could lapse (nothing resumed a live attempt), within the goal.
        earliest = LEASE_TTL_S - LEASE_HEARTBEAT_S - 1
        assert earliest <= figure["kill_to_resumed_s"] < GOAL_S, (stage, figures)
