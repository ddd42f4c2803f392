"""Definitions picked up live (issue 10, section 6): while a real beat and a real check worker
run, a second image folder is added, broken, fixed and removed; nothing is restarted. Bases come
from a throw-away registry, so the test needs no shared registry."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.model.events import DefinitionInvalid, Event, ReleaseDetected
from shared.testing.images import define_quick
from shared.testing.pypi_server import PyPIServer
from shared.testing.system import System, running
from tests.support.throwaway import RegistryServer, registry_with_base

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

INTERVAL_S = 3.0
# A check takes well under a second here; beat lists the folder every interval (at most 5 s).
WITHIN_S = INTERVAL_S + 3


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with registry_with_base(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def pypi() -> Iterator[PyPIServer]:
    with PyPIServer() as server:
        yield server


def _detected(system: System, image: str, version: str, timeout_s: float) -> float:
    """Seconds until a run of `version` of `image` was detected."""
    return _wait(system, image, timeout_s, lambda e: _is_release(e, version))


def _is_release(event: Event, version: str) -> bool:
    return isinstance(event, ReleaseDetected) and event.tool_version == version


def _wait(system: System, image: str, timeout_s: float, match: Callable[[Event], bool]) -> float:
    """Seconds until an event of `image` matches."""
    started = time.monotonic()
    while not any(match(r.event) for r in system.records(image)):
        types = [r.type for r in system.records(image)]
        assert time.monotonic() - started < timeout_s, f"{image}: none in {timeout_s} s: {types}"
        time.sleep(0.1)
    return time.monotonic() - started


def _asked(pypi: PyPIServer, project: str) -> int:
    return sum(1 for _method, path, _status, _sent in pypi.requests if f"/{project}/" in path)


def test_an_image_folder_added_broken_fixed_and_removed_while_everything_runs(
    tmp_path: Path, redis_url: str, pypi: PyPIServer, registry: RegistryServer
) -> None:
    base = f"{registry.host}/library/debian-python:bookworm"
    images = tmp_path / "images"
    images.mkdir()
    pypi.set_releases("first", ["1.0.0"])
    pypi.set_releases("httpie", ["3.2.3"])
    define_quick(images, "first", pypi.index, base, "live/first")
    env = {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(images),
        "FRESHEN_CHECK_INTERVAL_S": str(INTERVAL_S),
        "FRESHEN_RECONCILE_INTERVAL_S": "3600",
        "FRESHEN_AUDIT_INTERVAL_S": "3600",
        "FRESHEN_PUSH_REGISTRY": registry.host,
        "FRESHEN_INSECURE_REGISTRIES": registry.host,
    }
    with running("live-definitions", env, procs=("check", "beat")) as system:
        _detected(system, "first", "1.0.0", 60)

        # A second tool's folder appears: checked within one interval, nothing restarted.
        folder = define_quick(images, "httpie", pypi.index, base, "live/httpie")
        assert _detected(system, "httpie", "3.2.3", 30) < WITHIN_S

        # Broken: an error event naming the file and the field, once; the first image goes on.
        toml = folder / "image.toml"
        good = toml.read_text()
        toml.write_text(good.replace('"live/httpie"', '"Live/HTTPie!"'))
        assert _wait(system, "httpie", 30, lambda e: isinstance(e, DefinitionInvalid)) < WITHIN_S
        pypi.set_releases("first", ["1.0.0", "1.1.0"])
        pypi.set_releases("httpie", ["3.2.3", "3.2.4"])
        assert _detected(system, "first", "1.1.0", 30) < WITHIN_S
        time.sleep(2 * INTERVAL_S)  # more checks of the broken folder: no new event, no run
        records = system.records("httpie")
        errors = [r.event for r in records if isinstance(r.event, DefinitionInvalid)]
        assert len(errors) == 1, errors
        assert errors[0].file == str(toml) and errors[0].field == "target.repository"
        assert "httpie" in errors[0].error and str(toml) in errors[0].error
        assert not any(_is_release(r.event, "3.2.4") for r in records)
        assert system.ctx.state("httpie").definition_error == errors[0].error

        # Fixed: checked again with the definition as it is now.
        toml.write_text(good)
        assert _detected(system, "httpie", "3.2.4", 30) < WITHIN_S
        assert "DefinitionRepaired" in [r.type for r in system.records("httpie")]
        assert system.ctx.state("httpie").definition_error == ""

        # Removed: no longer checked (the first image still is).
        shutil.rmtree(folder)
        time.sleep(INTERVAL_S + 2)  # beat lists the folder again; a check already sent is moot
        asked = _asked(pypi, "httpie")
        pypi.set_releases("first", ["1.0.0", "1.1.0", "1.2.0"])
        assert _detected(system, "first", "1.2.0", 30) < WITHIN_S
        time.sleep(INTERVAL_S)
        assert _asked(pypi, "httpie") == asked
