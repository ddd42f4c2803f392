"""Fault 1: `kill -9` of a worker's pool child, or of the whole worker, at a random moment inside
each stage (mid-build, mid-test, between two tag pushes, mid git push). Every run still ends
exactly once, promoted once, with consistent tags, one git commit and tag, no test container
left and nothing left in moto.

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
from pathlib import Path

import docker
import pytest

from shared.projection import comparable, replay
from tests.conftest import BASE_IMAGE, MOTO_URL, REGISTRY
from tests.faults.images import bare_remote, define_awscli, define_quick
from tests.faults.invariants import (
    Figures,
    TagSampler,
    digests_that_passed,
    moto_orphans,
    run_problems,
)
from tests.faults.system import System, running
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
        client.images.build(path=str(folder), buildargs=args, network_mode="host", rm=True)
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
        "FRESHEN_AWS_ENDPOINT_URL": MOTO_URL,
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
OUTCOME = {"build": "BuildSucceeded", "test": "TestsPassed", "promote": "Promoted", "git": ""}


def _trial(rig: Rig, stage: str, kind: str, number: int) -> tuple[bool, float, list[str], bool]:
    s = rig.system
    image = rig.image(stage)
    if stage == "test":
        run_id = s.rebuild(image, AWSCLI_VERSION, force=True)
    else:
        run_id = s.rebuild(image, f"2.{number}.{len(QUEUE) + list(QUEUE).index(stage)}")
    window = _arm(rig, stage, image, run_id)
    time.sleep(random.uniform(0, window))
    types = [r.type for r in s.records(image, run_id)]
    landed = OUTCOME[stage] not in types if OUTCOME[stage] else "VersionsCommitted" not in types
    killed_at = time.monotonic()
    (s.kill_child if kind == "child" else s.kill_worker)(QUEUE[stage])
    s.wait_terminal(image, run_id, timeout_s=240)
    recover_s = time.monotonic() - killed_at
    problems = run_problems(s, image, run_id, rig.remote)
    if stage == "test":
        problems += moto_orphans(MOTO_URL, run_id)
    return not problems, recover_s, problems, landed


@pytest.mark.parametrize("stage", ["build", "test", "promote", "git"])
def test_kill_9_inside_a_stage(rig: Rig, stage: str, request: pytest.FixtureRequest) -> None:
    trials = int(request.config.getoption("--fault-trials"))
    figures = Figures(f"kill-9 {stage}")
    failures = []
    image = rig.image(stage)
    repository = f"{rig.prefix}/{image.split('-')[0]}"
    with TagSampler(REGISTRY, repository) as latest:
        for number in range(trials):
            kind = ("child", "worker")[number % 2]
            passed, recover_s, problems, landed = _trial(rig, stage, kind, number)
            figures.add(passed, recover_s, kind=kind, landed_in_stage=landed)
            if not passed:
                failures.append((number, kind, problems))
    figures.save()
    assert not failures, failures
    untested = set(latest.seen) - digests_that_passed(rig.system, image)
    assert latest.samples > 0 and not untested, f"latest pointed at untested {untested}"


def test_zz_replay_equals_the_live_state_after_the_kills(rig: Rig) -> None:
    live = rig.system.ctx.projections.all()
    replayed = replay(rig.system.ctx.store)
    assert set(live) == set(replayed)
    for name in live:
        assert comparable(live[name]) == comparable(replayed[name]), name
