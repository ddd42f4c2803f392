"""Faults 4 and 5: upstream misbehaviour from a local PyPI stand-in, checked by a real check
worker driven by a real beat; and two beats started by mistake, with two check workers at
concurrency 2 whose checks of the same release run at the same time."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.adapters.pypi import BODY_DEADLINE_FACTOR
from shared.testing.images import define_quick
from shared.testing.pypi_server import PyPIServer
from shared.testing.pypireleases import release_payload
from shared.testing.system import System, running
from shared.testing.taskevents import TaskEvents
from shared.testing.workers import children
from tests.conftest import BASE_IMAGE, REGISTRY
from tests.faults.invariants import Figures
from tests.support.registry_proxy import LoopbackServer, Reply, Seen, forward

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

HTTP_TIMEOUT_S = 2
LIMIT_BYTES = 1_000_000
# image → (what the stand-in does, words the CheckFailed error must contain)
MISBEHAVIOUR = {
    "drip": ("a body that never ends", "still incomplete"),
    "huge": ("a 50 MB body", "exceeds"),
    "loop": ("a redirect loop", "redirects in a loop"),
    "ctype": ("text/html, not JSON", "content type"),
    "truncated": ("truncated JSON", "not valid json"),
    "pep440": ("only non-PEP 440 versions", "not pep 440"),
    "yanked": ("only yanked releases", "yanked"),
}


def _misbehave(pypi: PyPIServer) -> None:
    payload = release_payload("drip", ["1.0.0"])
    pypi.set_response("drip", body=payload * 100, drip_bytes_per_s=50)
    pypi.set_response("huge", body=b" " * 50_000_000)
    pypi.set_response("loop", redirect_loop=True)
    pypi.set_response("ctype", body=b"<html>hi</html>", content_type="text/html")
    pypi.set_response("truncated", body=release_payload("truncated", ["1.0.0"])[:-20])
    pypi.set_releases("pep440", ["1.0; rm -rf /", "../../etc", "1.0\nlatest"])
    pypi.set_releases("yanked", ["1.0.0", "1.1.0"], yanked=["1.0.0", "1.1.0"])


def _env(root: Path, interval_s: float, redis_url: str) -> dict[str, str]:
    return {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(root / "images"),
        "FRESHEN_CHECK_INTERVAL_S": str(interval_s),
        "FRESHEN_RECONCILE_INTERVAL_S": "3600",
        "FRESHEN_HTTP_TIMEOUT_S": str(HTTP_TIMEOUT_S),
        "FRESHEN_HTTP_RETRIES": "0",
        "FRESHEN_MAX_RESPONSE_BYTES": str(LIMIT_BYTES),
        "FRESHEN_CHECK_TIME_LIMIT_S": "30",
        # A batch of one: each check's runtime is bounded on its own (beat sends batches).
        "FRESHEN_CHECK_BATCH_SIZE": "1",
    }


@pytest.fixture
def pypi() -> Iterator[PyPIServer]:
    with PyPIServer() as server:
        yield server


def _types(system: System, image: str) -> list[str]:
    return [r.type for r in system.records(image)]


def _wait_for(system: System, image: str, kind: str, timeout_s: float) -> float:
    started = time.monotonic()
    deadline = started + timeout_s
    while kind not in _types(system, image):
        assert time.monotonic() < deadline, f"{image}: no {kind}: {_types(system, image)}"
        time.sleep(0.1)
    return time.monotonic() - started


def test_misbehaving_upstreams_fail_checks_in_time_and_the_next_good_answer_wins(
    tmp_path: Path, pypi: PyPIServer, redis_url: str
) -> None:
    for image in MISBEHAVIOUR:
        define_quick(tmp_path / "images", image, pypi.index, BASE_IMAGE, f"faults/{image}")
    _misbehave(pypi)
    figures = Figures("upstream misbehaviour")
    with running("upstream", _env(tmp_path, 10, redis_url), procs=("check", "beat")) as system:
        for image, (_what, words) in MISBEHAVIOUR.items():
            _wait_for(system, image, "CheckFailed", 60)
            error = next(r.event.error for r in system.records(image) if r.type == "CheckFailed")  # type: ignore[union-attr]
            assert error.startswith(f"{image}: check failed") and words in error.lower(), error
        peak_kb = max(_peak_rss_kb(pid) for pid in children(system.procs["check"].pid))
        for image in MISBEHAVIOUR:
            pypi.set_releases(image, ["9.0.0"])
        for image in MISBEHAVIOUR:
            recover_s = _wait_for(system, image, "ReleaseDetected", 60)
            assert _types(system, image)[-2:] == ["CheckRecovered", "ReleaseDetected"]
            figures.add(True, recover_s, image=image)
        runtimes = _check_runtimes(system.log_path("check"))
    figures.save()
    assert max(runtimes) < BODY_DEADLINE_FACTOR * HTTP_TIMEOUT_S + 5, sorted(runtimes)[-5:]
    assert peak_kb < 300_000, f"check worker peaked at {peak_kb} kB"


def _peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def _check_runtimes(log: Path) -> list[float]:
    text = log.read_text(errors="replace")
    found = re.findall(r"workers\.check\.check_images\[[^\]]+\] succeeded in ([0-9.]+)s", text)
    assert found, "the check worker logged no finished check"
    return [float(s) for s in found]


class Cohorts:
    """Parks every request that reaches it until `release`, which lets the parked ones go at
    once; a request that comes later waits for the next release. Lines up every check process at
    the last outside call before the check decides and appends, so their appends really race."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._cohort = 0
        self._parked = 0
        self._open = False

    def park(self) -> None:
        with self._cond:
            mine = self._cohort
            self._parked += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._cohort != mine or self._open, timeout=60)

    def wait_parked(self, count: int, timeout_s: float = 30) -> None:
        with self._cond:
            arrived = self._cond.wait_for(lambda: self._parked >= count, timeout_s)
            assert arrived, f"only {self._parked} of {count} checks reached the registry"

    def release(self) -> tuple[float, int]:
        """Let the parked requests go; the wall-clock time and how many they were."""
        with self._cond:
            parked, self._parked = self._parked, 0
            self._cohort += 1
            self._cond.notify_all()
            return time.time(), parked

    def open(self) -> None:
        """Park nothing from now on."""
        with self._cond:
            self._open = True
            self._cond.notify_all()


def _parking(cohorts: Cohorts) -> Callable[[Seen], Reply]:
    def respond(seen: Seen) -> Reply:
        if seen.method == "HEAD" and "/manifests/" in seen.path:
            cohorts.park()
        return forward(REGISTRY, seen)

    return respond


# Two check workers at concurrency 2: this many checks run at once.
CHECK_SLOTS = 4
TWIN_RELEASES = ["5.0.0", "5.1.0", "5.2.0"]


def _race(system: System, pypi: PyPIServer, cohorts: Cohorts, number: int) -> tuple[float, int]:
    """Line up all check processes with release `number` new upstream and let them go at once;
    when they went, and how many. Every check process parked means none is between its PyPI
    answer and the registry: the ones let through next asked PyPI after the new release."""
    if number:
        cohorts.wait_parked(CHECK_SLOTS)
        pypi.set_releases("twin", TWIN_RELEASES[: number + 1])
        cohorts.release()  # these saw the previous release and find its run
    cohorts.wait_parked(CHECK_SLOTS)  # all saw this release
    at, parked = cohorts.release()
    version, deadline = TWIN_RELEASES[number], time.monotonic() + 30
    while not any(
        r.type == "ReleaseDetected" and r.event.tool_version == version  # type: ignore[union-attr]
        for r in system.records("twin")
    ):
        assert time.monotonic() < deadline, f"no run of {version}: {_types(system, 'twin')}"
        time.sleep(0.1)
    return at, parked


def test_two_beats_and_two_check_workers_racing_start_one_run_per_release(
    tmp_path: Path, pypi: PyPIServer, redis_url: str
) -> None:
    cohorts = Cohorts()
    with LoopbackServer(_parking(cohorts)) as proxy:
        base = f"{proxy.host}/{BASE_IMAGE.split('/', 1)[1]}"
        define_quick(tmp_path / "images", "twin", pypi.index, base, "faults/twin")
        pypi.set_releases("twin", TWIN_RELEASES[:1])
        env = {
            **_env(tmp_path, 1, redis_url),
            "FRESHEN_HTTP_TIMEOUT_S": "20",  # parked checks must not time out
            "FRESHEN_INSECURE_REGISTRIES": f"{REGISTRY},{proxy.host}",
        }
        procs, pools = ("check", "check2", "beat", "beat2"), {"check": 2, "check2": 2}
        try:
            with (
                running("beats", env, procs, concurrency=pools) as system,
                TaskEvents(system.app) as tap,
            ):
                races = [_race(system, pypi, cohorts, n) for n in range(len(TWIN_RELEASES))]
                cohorts.open()
                time.sleep(4)  # more checks of the last release, unparked; their events arrive
                detected = [r.event for r in system.records("twin") if r.type == "ReleaseDetected"]
                types = set(_types(system, "twin"))
                spans = tap.spans("workers.check.check_images", [["twin"]])
                sent = [
                    system.log_path(beat).read_text().count("Sending due task check-1")
                    for beat in ("beat", "beat2")
                ]
        finally:
            cohorts.open()
    versions = [e.tool_version for e in detected]  # type: ignore[union-attr]
    assert versions == TWIN_RELEASES, f"ReleaseDetected per release: {versions}"
    assert types == {"ReleaseDetected"}, types
    overlapping = []
    for (at, parked), event in zip(races, detected, strict=True):
        running_then = [s for s in spans if s.start <= at <= s.end]
        results = sorted(str(s.result) for s in running_then)
        overlapping.append(len(running_then))
        # Each check of the cohort ran at the same time; exactly one started the run.
        assert parked == CHECK_SLOTS and len(running_then) == CHECK_SLOTS, (parked, running_then)
        run = {"twin": event.run_id}  # type: ignore[union-attr]
        expected = sorted(["{}"] * (CHECK_SLOTS - 1) + [repr(run)])
        assert results == expected, results
    assert min(sent) >= 5, f"checks sent by each beat: {sent}"
    print(f"two beats: {overlapping} checks of the same release overlapping; {sent} sent")
    figures = Figures("two beats")
    figures.add(True, None, checks_sent=sent, runs=len(detected), overlapping_checks=overlapping)
    figures.save()
