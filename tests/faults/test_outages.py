"""Faults 2 and 3: Redis restarted during a run, the registry gone for 30 s during the build push
and during promote. Each test runs its own throw-away Redis or registry (never the shared ones).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.adapters.eventstore import EventStore
from shared.errors import ConcurrencyError
from shared.model.events import CheckFailed
from shared.testing.images import bare_remote, define_quick
from shared.testing.system import running
from shared.testing.taskevents import Background
from tests.conftest import BASE_IMAGE, REGISTRY
from tests.faults.invariants import (
    Figures,
    TagSampler,
    digests_that_passed,
    run_problems,
)
from tests.support.throwaway import RedisServer, RegistryServer, registry_with_base

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

OUTAGE_S = 30  # how long the registry stays away
INDEX = "http://127.0.0.1:9/pypi"  # runs are started with a version: never asked
# Unique per session: run ids (and test container names) derive from the image name.
QUICK = f"quick-{uuid.uuid4().hex[:8]}"


def _env(root: Path, redis_url: str, registry: str, remote: Path) -> dict[str, str]:
    return {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(root / "images"),
        "FRESHEN_PUSH_REGISTRY": registry,
        "FRESHEN_INSECURE_REGISTRIES": registry,
        "FRESHEN_GIT_URL": f"file://{remote}",
        "FRESHEN_GIT_WORKDIR": str(root / "git-work"),
        "FRESHEN_CHECK_INTERVAL_S": "3600",
        "FRESHEN_RECONCILE_INTERVAL_S": "1",
        "FRESHEN_BUILD_TIME_LIMIT_S": "30",
        "FRESHEN_TEST_TIME_LIMIT_S": "30",
        "FRESHEN_PROMOTE_TIME_LIMIT_S": "30",
        "FRESHEN_HTTP_TIMEOUT_S": "3",
        "FRESHEN_HTTP_RETRIES": "1",
    }


class ProbeWriter(Background):
    """Appends events to a probe stream as fast as Redis takes them; remembers what was
    acknowledged (the append returned), to check that none of it is lost in a restart."""

    def __init__(self, url: str) -> None:
        self.store = EventStore(redis.Redis.from_url(url, socket_timeout=1))
        self.acknowledged: dict[int, str] = {}
        self.refused = 0
        super().__init__("probe-writer")

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                position = self.store.length("probe")
                self.store.append("probe", [CheckFailed(f"probe {n}")], position)
                self.acknowledged[position] = f"probe {n}"
            except (redis.RedisError, ConcurrencyError):
                self.refused += 1
                self._stop.wait(0.05)

    def lost(self) -> list[int]:
        stored = {r.position: r.event.error for r in self.store.read("probe")}  # type: ignore[union-attr]
        return [p for p, text in self.acknowledged.items() if stored.get(p) != text]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    return tmp_path


def test_redis_restart_loses_no_acknowledged_event_and_runs_complete(root: Path) -> None:
    server = RedisServer(root / "redis")
    server.start()
    remote = bare_remote(root / "versions.git")
    define_quick(
        root / "images", QUICK, INDEX, BASE_IMAGE, f"freshen-faults-{uuid.uuid4().hex[:8]}/quick"
    )
    figures = Figures("redis restart")
    problems: list[str] = []
    try:
        with (
            running("redis", _env(root, server.url, REGISTRY, remote)) as system,
            ProbeWriter(server.url) as probe,
        ):
            for number, (sig, moment) in enumerate(
                [(signal.SIGKILL, "BuildStarted"), (signal.SIGTERM, "TestStarted")]
            ):
                run_id = system.rebuild(QUICK, f"3.{number}.0")
                system.wait_event(QUICK, run_id, moment)
                server.stop(sig)
                time.sleep(3)
                server.start()
                back = time.monotonic()
                system.wait_terminal(QUICK, run_id, timeout_s=240)
                found = run_problems(system, QUICK, run_id, remote)
                figures.add(not found, time.monotonic() - back, signal=sig.name, during=moment)
                problems += found
        lost = probe.lost()  # the writer has stopped: every acknowledged append is known
        figures.save()
        assert not problems, problems
        assert len(probe.acknowledged) > 100 and probe.refused > 0
        assert not lost, f"acknowledged events lost: {lost[:10]}"
    finally:
        server.stop()


@pytest.fixture
def registry(root: Path) -> Iterator[RegistryServer]:
    with registry_with_base(root / "registry") as server:
        yield server


def test_registry_gone_for_30_s_during_build_push_and_promote(
    root: Path, registry: RegistryServer, redis_url: str
) -> None:
    base = f"{registry.host}/library/debian-python:bookworm"
    repository = "freshen-faults/quick"
    define_quick(root / "images", QUICK, INDEX, base, repository, test_sleep_s=0.5)
    remote = bare_remote(root / "versions.git")
    figures = Figures("registry outage 30 s")
    problems: list[str] = []
    env = _env(root, redis_url, registry.host, remote)
    with running("registry", env) as system, TagSampler(registry.host, repository) as latest:
        for number, moment in enumerate(["BuildStarted", "PromotionStarted"]):
            run_id = system.rebuild(QUICK, f"4.{number}.0")
            system.wait_event(QUICK, run_id, moment)
            registry.stop()
            time.sleep(OUTAGE_S)
            registry.start()
            back = time.monotonic()
            system.wait_terminal(QUICK, run_id, timeout_s=300)
            found = run_problems(system, QUICK, run_id, remote)
            figures.add(not found, time.monotonic() - back, during=moment)
            problems += found
        passed = digests_that_passed(system, QUICK)
    figures.save()
    assert not problems, problems
    untested = set(latest.seen) - passed
    assert latest.samples > 100 and not untested, f"latest pointed at untested {untested}"
