"""Fault 1: `kill -9` of a worker's pool child, or of the whole worker, at a random moment inside
each stage (mid-build, mid-test, between two tag pushes, mid git push). Every trial's kill lands
inside its stage (the log shows it between the stage's start and its outcome). Every run still
ends exactly once, promoted once, with consistent tags, one git commit and tag, no test
container, moto container or test network of the run left (run_problems), and replay
equal to the live state.

A killed pool child's task is redelivered at once (acks_late + reject_on_worker_lost). A killed
worker's task stays unacknowledged until the broker's visibility timeout; the reconciler resumes
the run when the stage's lease is older than its time limit, so these trials recover in about
one stage time limit (20 s here for build and promote, 45 s for test).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import docker
import pytest

from shared.testing.images import bare_remote, define_awscli, define_quick
from shared.testing.system import System, running
from tests.conftest import BASE_IMAGE, PULL_REGISTRY, REGISTRY
from tests.faults.invariants import (
    Figures,
    TagSampler,
    digests_that_passed,
    replay_problems,
    run_problems,
)
from tests.support.registry_proxy import LoopbackServer, Reply, Seen, forward

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

AWSCLI_VERSION = "1.46.3"
PUT_DELAY_S = 0.4  # each tag push through the promote worker's registry proxy
HOOK_SLEEP_S = 1.5  # each git push waits this long in the remote's pre-receive hook


@dataclass
class Rig:
    system: System
    remote: Path
    markers: Path
    proxy: LoopbackServer
    prefix: str
    suffix: str  # image names are unique per session: run ids (and moto names) are too

    def image(self, stage: str) -> str:
        return f"{'aws' if stage == 'test' else 'quick'}-{self.suffix}"


def _slow_puts(seen: Seen) -> Reply:
    reply = forward(REGISTRY, seen)
    if seen.method == "PUT" and "/manifests/" in seen.path:
        time.sleep(PUT_DELAY_S)
    return reply


def _warm_awscli_cache(folder: Path, base: str) -> None:
    """Build the awscli layers once, so each trial's build is a cache hit (as in production)."""
    client = docker.from_env()
    try:
        digest = client.images.get_registry_data(base).id
        args = {"VERSION": AWSCLI_VERSION, "BASE": f"{base.rsplit(':', 1)[0]}@{digest}"}
        client.images.build(path=str(folder), buildargs=args, rm=True)
    finally:
        client.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("kill")
    suffix = uuid.uuid4().hex[:8]
    prefix = f"freshen-faults-{suffix}"
    images = root / "images"
    index = "http://127.0.0.1:9/pypi"  # runs are started with a version: never asked
    define_quick(images, f"quick-{suffix}", index, BASE_IMAGE, f"{prefix}/quick")
    aws = define_awscli(images, f"aws-{suffix}", index, BASE_IMAGE, f"{prefix}/aws")
    _warm_awscli_cache(aws, BASE_IMAGE)
    markers = root / "markers"
    remote = bare_remote(root / "versions.git", HOOK_SLEEP_S, markers)
    env = {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(images),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_GIT_URL": f"file://{remote}",
        "FRESHEN_GIT_WORKDIR": str(root / "git-work"),
        "FRESHEN_CHECK_INTERVAL_S": "3600",
        "FRESHEN_RECONCILE_INTERVAL_S": "1",
        "FRESHEN_BUILD_TIME_LIMIT_S": "20",
        "FRESHEN_TEST_TIME_LIMIT_S": "45",
        "FRESHEN_PROMOTE_TIME_LIMIT_S": "20",
    }
    with LoopbackServer(_slow_puts) as proxy:
        promote_env = {
            "FRESHEN_PUSH_REGISTRY": proxy.host,
            "FRESHEN_INSECURE_REGISTRIES": f"{REGISTRY},{proxy.host}",
        }
        with running("kill", env, overrides={"promote": promote_env}) as system:
            yield Rig(system, remote, markers, proxy, prefix, suffix)


def _tag_puts(rig: Rig) -> int:
    return sum(1 for s in rig.proxy.seen if s.method == "PUT" and "/manifests/" in s.path)


def _pushes(rig: Rig) -> int:
    return len(list(rig.markers.iterdir()))


def _arm(rig: Rig, stage: str, image: str, run_id: str) -> float:
    """Wait until the run is inside `stage`; return how long the stage's interesting part lasts
    from now (the window the kill lands in)."""
    s = rig.system
    if stage == "build":
        s.wait_event(image, run_id, "BuildStarted")
        return 1.5
    if stage == "test":
        s.wait_event(image, run_id, "TestStarted")
        return 10.0
    if stage == "promote":
        before = _tag_puts(rig)
        s.wait_event(image, run_id, "PromotionStarted")
        _wait(lambda: _tag_puts(rig) > before, 30, "the first tag push")
        return PUT_DELAY_S  # the next push starts within this
    before = _pushes(rig)
    _wait(lambda: _pushes(rig) > before, 60, "the git push")
    return HOOK_SLEEP_S


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.01)


QUEUE = {"build": "build", "test": "test", "promote": "promote", "git": "promote"}
# The events a stage sits between: a kill lands inside it when it comes after the first is in
# the log and before the second is (git: the versions-file push after the tags moved).
BOUNDS = {
    "build": ("BuildStarted", "BuildSucceeded"),
    "test": ("TestStarted", "TestsPassed"),
    "promote": ("PromotionStarted", "Promoted"),
    "git": ("Promoted", "VersionsCommitted"),
}
INJECTION_TRIES = 6  # runs started per trial to land one kill inside the stage


@dataclass
class Trial:
    problems: list[str]
    recover_s: float | None
    missed: int  # runs whose stage ended before the kill came, so none was killed


def _at(rig: Rig, image: str, run_id: str, kind: str) -> list[float]:
    """When each event of `kind` of the run was recorded (wall clock, s)."""
    return [
        datetime.fromisoformat(r.at).timestamp()
        for r in rig.system.records(image, run_id)
        if r.type == kind
    ]


def _start(rig: Rig, stage: str, number: int, attempt: int) -> str:
    image = rig.image(stage)
    if stage == "test":
        return rig.system.rebuild(image, AWSCLI_VERSION, force=True)
    return rig.system.rebuild(image, f"2.{number}.{10 * (4 + list(QUEUE).index(stage)) + attempt}")


def _trial(rig: Rig, stage: str, kind: str, number: int) -> Trial:
    """Kill inside the stage: after its start is in the log and before its outcome is. When the
    outcome comes first (the stage was quicker than the random delay, or it was appended in the
    instant before the kill), that run is checked and another one started, with a shorter delay.
    A trial passes only with a kill that the log shows between the stage's start and outcome."""
    s, image = rig.system, rig.image(stage)
    started, outcome = BOUNDS[stage]
    problems: list[str] = []
    for attempt in range(INJECTION_TRIES):
        run_id = _start(rig, stage, number, attempt)
        window = _arm(rig, stage, image, run_id) / 2**attempt
        time.sleep(random.uniform(0, window))
        killed_at = None
        if not _at(rig, image, run_id, outcome):
            killed_at = (s.kill_child if kind == "child" else s.kill_worker)(QUEUE[stage])
        s.wait_terminal(image, run_id, timeout_s=240)
        ended_at = time.time()
        problems += run_problems(s, image, run_id, rig.remote)
        after = _at(rig, image, run_id, outcome)
        if killed_at is None or (after and min(after) < killed_at):
            continue  # the stage was over before the kill: nothing was killed inside it
        before = _at(rig, image, run_id, started)
        if not before or max(before) > killed_at:
            problems.append(f"{run_id}: killed at {killed_at:.3f}, before {started} {before}")
        return Trial(problems + replay_problems(s.ctx), ended_at - killed_at, attempt)
    problems.append(f"no kill landed inside the {stage} in {INJECTION_TRIES} runs")
    return Trial(problems, None, INJECTION_TRIES)


@pytest.mark.parametrize("stage", ["build", "test", "promote", "git"])
def test_kill_9_inside_a_stage(rig: Rig, stage: str, request: pytest.FixtureRequest) -> None:
    trials = int(request.config.getoption("--fault-trials"))
    figures = Figures(f"kill-9 {stage}")
    failures = []
    image = rig.image(stage)
    repository = f"{rig.prefix}/{image.split('-')[0]}"
    with TagSampler(PULL_REGISTRY, repository) as latest:  # read anonymously
        for number in range(trials):
            kind = ("child", "worker")[number % 2]
            trial = _trial(rig, stage, kind, number)
            passed = not trial.problems
            figures.add(passed, trial.recover_s, kind=kind, missed_before_landing=trial.missed)
            if not passed:
                failures.append((number, kind, trial.problems))
    figures.save()
    assert not failures, failures
    untested = set(latest.seen) - digests_that_passed(rig.system, image)
    assert latest.samples > 0 and not untested, f"latest pointed at untested {untested}"
