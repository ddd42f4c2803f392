"""A whole worker lost in each stage (issue 8 item 6; the goal of issue 6: the stage runs again
within 90 s of the kill, with default settings).

Three runs sit in three stages at once: a build whose `RUN` sleeps, a test that sleeps, a
versions-file push the git remote holds. The build, test and promote workers are killed
together with `kill -9` (main process, pool, their subprocesses) and restarted, as a supervisor
would. Their unacknowledged messages come back only after the broker's visibility timeout (an
hour with the default limits): what brings each run home is the lapsed lease and the
reconciler. The fault suite checks the promise (tests/faults/test_worker_loss.py); the
benchmark times it (bench/recovery.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.model.events import RunResumed
from shared.model.pipeline import spec
from shared.testing.images import bare_remote, define_quick
from shared.testing.services import BASE_IMAGE, REGISTRY
from shared.testing.system import System
from shared.testing.taskevents import TaskEvents

GOAL_S = 90.0  # issue 6 / issue 8 item 6: a whole-worker kill is resumed within this
STAGES = ("build", "test", "promote")
HOOK_SLEEP_S = 25  # the git remote holds every versions-file push this long
TEST_SLEEP_S = 40  # the test stage's script sleeps this long
SLOW_DOCKERFILE = """ARG BASE
FROM ${BASE}
ARG VERSION
RUN echo "$VERSION" > /version && sleep 25
"""
# The event that ends each stage: it must come only after the kill, or the kill missed.
OUTCOME = {"build": "BuildSucceeded", "test": "TestsPassed", "promote": "VersionsCommitted"}
STAGING_TIMEOUT_S = 120  # for each run to reach its stage
DONE_TIMEOUT_S = 240  # for each run to finish after the kill


def define_images(root: Path, prefix: str) -> None:
    """The three definitions (repositories under the registry namespace `prefix`) and the
    holding git remote, under `root`; the image of each stage is `loss-<stage>`."""
    index = "http://127.0.0.1:9/pypi"  # runs are started with a version: never asked
    build = define_quick(root / "images", "loss-build", index, BASE_IMAGE, f"{prefix}/build")
    (build / "Dockerfile").write_text(SLOW_DOCKERFILE)
    for stage, sleep_s in (("test", TEST_SLEEP_S), ("promote", 0)):
        repository = f"{prefix}/{stage}"
        define_quick(root / "images", f"loss-{stage}", index, BASE_IMAGE, repository, sleep_s)
    bare_remote(root / "versions.git", HOOK_SLEEP_S, root / "markers")


def environment(root: Path, redis_url: str, **settings: str) -> dict[str, str]:
    """The FRESHEN_* settings of the system: defaults, but for the inputs under `root` (and any
    `settings` given, e.g. a shorter reconcile interval for a quick run)."""
    return {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(root / "images"),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_GIT_URL": f"file://{root / 'versions.git'}",
        "FRESHEN_GIT_WORKDIR": str(root / "git-work"),
        "FRESHEN_CHECK_INTERVAL_S": "3600",
        **{f"FRESHEN_{k.upper()}": v for k, v in settings.items()},
    }


def stage_runs(system: System, root: Path) -> dict[str, str]:
    """Start a run of each image and wait until each sits inside its stage; run id by stage."""
    version = f"1.0.{time.time_ns() // 1000}"  # a new build argument: the slow RUN is not cached
    pushes = len(list((root / "markers").iterdir()))
    promoting = system.rebuild("loss-promote", version)
    system.wait_event("loss-promote", promoting, "BuildSucceeded", STAGING_TIMEOUT_S)
    testing = system.rebuild("loss-test", version)
    system.wait_event("loss-test", testing, "BuildSucceeded", STAGING_TIMEOUT_S)
    building = system.rebuild("loss-build", version)
    system.wait_event("loss-build", building, "BuildStarted", STAGING_TIMEOUT_S)
    system.wait_event("loss-test", testing, "TestStarted", STAGING_TIMEOUT_S)
    system.wait_event("loss-promote", promoting, "Promoted", STAGING_TIMEOUT_S)
    deadline = time.monotonic() + 60
    while len(list((root / "markers").iterdir())) <= pushes:
        if time.monotonic() > deadline:
            raise AssertionError("the versions-file push never reached the remote")
        time.sleep(0.05)
    return {"build": building, "test": testing, "promote": promoting}


@dataclass(frozen=True)
class Recovery:
    """One stage's run after its worker was killed: seconds from the kill (wall clock)."""

    stage: str
    inside: bool  # the stage's outcome came only after the kill: the kill landed inside it
    status: str  # of the run at the end ("done" when it completed)
    resumed_s: float | None  # to RunResumed: the reconciler handed the stage on again
    running_s: float | None  # to the stage's task starting again (its Celery task event)
    done_s: float  # to the run's last event


def kill_and_recover(system: System, runs: dict[str, str], tap: TaskEvents) -> list[Recovery]:
    """kill -9 the build, test and promote workers (restarted at once), wait for the three runs
    to end, and tell how each came back."""
    killed = {stage: system.kill_worker(stage) for stage in STAGES}
    recoveries = []
    for stage, run_id in runs.items():
        image = f"loss-{stage}"
        run = system.wait_terminal(image, run_id, timeout_s=DONE_TIMEOUT_S)
        records = system.records(image, run_id)
        at = {r.position: datetime.fromisoformat(r.at).timestamp() - killed[stage] for r in records}
        ends = [at[r.position] for r in records if r.type == OUTCOME[stage]]
        resumed = [
            at[r.position]
            for r in records
            if isinstance(r.event, RunResumed) and r.event.stage == stage
        ]
        again = tap.started_after(spec(stage).task, [image, run_id], killed[stage])
        recoveries.append(
            Recovery(
                stage,
                inside=bool(ends) and min(ends) > 0,
                status=str(run.status),
                resumed_s=min(resumed, default=None),
                running_s=None if again is None else again - killed[stage],
                done_s=at[records[-1].position],
            )
        )
    return recoveries
