"""Faults 4 and 5: upstream misbehaviour from a local PyPI stand-in, checked by a real check
worker driven by a real beat; and two beats started by mistake."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.pypi import BODY_DEADLINE_FACTOR
from tests.conftest import BASE_IMAGE
from tests.faults.images import define_quick
from tests.faults.invariants import Figures
from tests.faults.system import System, children, running
from tests.support.pypi_server import PyPIServer, release_payload

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
    found = re.findall(r"workers\.check\.check_image\[[^\]]+\] succeeded in ([0-9.]+)s", text)
    assert found, "the check worker logged no finished check"
    return [float(s) for s in found]


def test_two_beats_still_start_one_run_per_release(
    tmp_path: Path, pypi: PyPIServer, redis_url: str
) -> None:
    define_quick(tmp_path / "images", "twin", pypi.index, BASE_IMAGE, "faults/twin")
    pypi.set_releases("twin", ["5.0.0"])
    with running("beats", _env(tmp_path, 1, redis_url), procs=("check", "beat", "beat2")) as system:
        _wait_for(system, "twin", "ReleaseDetected", 30)
        time.sleep(5)  # both beats keep sending checks of the same release
        pypi.set_releases("twin", ["5.0.0", "5.1.0"])
        deadline = time.monotonic() + 30
        while _types(system, "twin").count("ReleaseDetected") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(5)
        detected = [r.event for r in system.records("twin") if r.type == "ReleaseDetected"]
        sent = [
            system.log_path(beat).read_text().count("Sending due task check-twin")
            for beat in ("beat", "beat2")
        ]
    assert [e.tool_version for e in detected] == ["5.0.0", "5.1.0"]  # type: ignore[union-attr]
    assert min(sent) >= 5, f"checks sent by each beat: {sent}"
    figures = Figures("two beats")
    figures.add(True, None, checks_sent=sent, runs=len(detected))
    figures.save()
