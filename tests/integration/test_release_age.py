"""The release-age gate through the real check stage: a local PyPI whose upload times the test
sets, the real Redis (its own database) and the real registry for the base digest. "Built"
here means the check started a run (ReleaseDetected); the build itself is another stage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import api, cli
from shared.context import Context
from shared.model.events import ReleaseDetected, ReleaseWaitEnded, ReleaseWaiting
from shared.model.releaseage import iso
from shared.stages.check import check
from shared.testing.images import define_quick
from shared.testing.pypi_server import PyPIServer
from tests.conftest import BASE_IMAGE
from tests.support.isolated import flushed_context

REDIS_URL = "redis://127.0.0.1:6379/4"  # this module's own database, flushed before and after
IMAGE = "agetool"

pytestmark = pytest.mark.timeout(60)


def define(images: Path, index: str, min_release_age: str) -> None:
    folder = define_quick(images, IMAGE, index, BASE_IMAGE, f"freshen-test/{IMAGE}")
    toml = (folder / "image.toml").read_text()
    (folder / "image.toml").write_text(
        toml.replace("[source]\n", f"[source]\nmin_release_age = {min_release_age}\n", 1)
    )


@pytest.fixture
def server() -> Iterator[PyPIServer]:
    with PyPIServer() as running:
        yield running


def context_for(tmp_path: Path, server: PyPIServer, min_release_age: str) -> Context:
    define(tmp_path / "images", server.index, min_release_age)
    return flushed_context(REDIS_URL, tmp_path / "images")


@pytest.fixture
def hour_ctx(tmp_path: Path, server: PyPIServer) -> Iterator[Context]:
    context = context_for(tmp_path, server, '"1h"')
    yield context
    context.redis.flushdb()
    context.redis.close()


def events(ctx: Context) -> list[object]:
    return [r.event for r in ctx.store.read(IMAGE)]


def built(ctx: Context) -> list[str]:
    """Tool versions the check started runs for, in order."""
    return [e.tool_version for e in events(ctx) if isinstance(e, ReleaseDetected)]


def shown_status(ctx: Context) -> str:
    return repr(api._status(ctx.state(IMAGE)))


def statuses(server: PyPIServer) -> list[int]:
    return [status for _, _, status, _ in server.requests]


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def test_a_young_release_waits_the_older_is_built_and_the_young_one_once_old_enough(
    hour_ctx: Context, server: PyPIServer
) -> None:
    uploaded = ago(seconds=10)
    server.set_releases(IMAGE, ["1.0.0", "1.1.0"], uploaded_at={"1.1.0": uploaded})
    assert check(hour_ctx, IMAGE)  # a run, for 1.0.0
    assert built(hour_ctx) == ["1.0.0"]
    until = iso(uploaded.timestamp() + 3600 + 1)  # upload times are rounded up to the second
    waiting = [e for e in events(hour_ctx) if isinstance(e, ReleaseWaiting)]
    assert [(e.tool_version, e.until) for e in waiting] == [("1.1.0", until)]
    assert f"1.1.0 waits until {until}" in shown_status(hour_ctx)

    count = len(events(hour_ctx))
    assert check(hour_ctx, IMAGE) is None
    assert len(events(hour_ctx)) == count  # one waiting event per release, not one per check
    assert statuses(server) == [200, 304]  # still one request per check, 304 when unchanged

    # PyPI now says 1.1.0 was uploaded two hours ago: the next check builds it
    server.set_releases(IMAGE, ["1.0.0", "1.1.0"], uploaded_at={"1.1.0": ago(hours=2)})
    assert check(hour_ctx, IMAGE)
    assert built(hour_ctx) == ["1.0.0", "1.1.0"]
    assert events(hour_ctx)[-2] == ReleaseWaitEnded("1.1.0", "old enough")
    assert "waits" not in shown_status(hour_ctx)


def test_nothing_is_built_while_the_only_release_is_too_young(
    hour_ctx: Context, server: PyPIServer
) -> None:
    server.set_releases(IMAGE, ["2.0.0"], uploaded_at={"2.0.0": ago(minutes=5)})
    assert check(hour_ctx, IMAGE) is None
    assert built(hour_ctx) == [] and hour_ctx.state(IMAGE).check_error == ""
    assert "2.0.0 waits until " in shown_status(hour_ctx)


def test_time_passing_makes_a_waiting_release_buildable_on_a_304(
    tmp_path: Path, server: PyPIServer
) -> None:
    ctx = context_for(tmp_path, server, '"3s"')
    try:
        server.set_releases(IMAGE, ["1.0.0", "1.1.0"], uploaded_at={"1.1.0": ago(seconds=0)})
        check(ctx, IMAGE)
        assert built(ctx) == ["1.0.0"]
        waiting = ctx.state(IMAGE).waiting
        assert waiting is not None
        until = datetime.fromisoformat(waiting.until).timestamp()
        time.sleep(max(0.0, until - time.time()) + 0.2)
        assert check(ctx, IMAGE)
        assert built(ctx) == ["1.0.0", "1.1.0"]
        assert statuses(server) == [200, 304]  # the cached upload time decided it
        assert ctx.state(IMAGE).waiting is None
    finally:
        ctx.redis.flushdb()
        ctx.redis.close()


def test_a_release_yanked_while_it_waits_is_never_built(
    hour_ctx: Context, server: PyPIServer
) -> None:
    versions = ["1.0.0", "1.1.0"]
    server.set_releases(IMAGE, versions, uploaded_at={"1.1.0": ago(minutes=1)})
    check(hour_ctx, IMAGE)
    server.set_releases(IMAGE, versions, yanked=["1.1.0"], uploaded_at={"1.1.0": ago(minutes=1)})
    assert check(hour_ctx, IMAGE) is None
    assert events(hour_ctx)[-1] == ReleaseWaitEnded("1.1.0", "withdrawn")
    # long after its time, still yanked: never built
    server.set_releases(IMAGE, versions, yanked=["1.1.0"], uploaded_at={"1.1.0": ago(days=3)})
    assert check(hour_ctx, IMAGE) is None
    assert built(hour_ctx) == ["1.0.0"]
    assert "waits" not in shown_status(hour_ctx)


def test_a_release_without_upload_time_is_a_check_error_naming_image_and_stage(
    hour_ctx: Context, server: PyPIServer
) -> None:
    server.set_releases(IMAGE, ["1.0.0", "1.1.0"], uploaded_at={"1.1.0": None})
    assert check(hour_ctx, IMAGE) is None
    error = hour_ctx.state(IMAGE).check_error
    assert error.startswith(f"{IMAGE}: check failed: PyPI project {IMAGE}: release 1.1.0 has no")
    assert built(hour_ctx) == []


def test_rebuild_refuses_a_young_version_until_forced(
    hour_ctx: Context,
    server: PyPIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the CLI and shared/api.py as an operator runs them (their context is this
    test's; the build message is recorded instead of sent)."""
    sent: list[tuple[str, str, str]] = []
    monkeypatch.setattr("workers.app.context", lambda: hour_ctx)
    monkeypatch.setattr("workers.base.dispatch", lambda *args: sent.append(args) or True)
    server.set_releases(IMAGE, ["1.0.0", "1.1.0"], uploaded_at={"1.1.0": ago(minutes=1)})
    check(hour_ctx, IMAGE)

    assert cli.main(["status", IMAGE]) == 0
    assert "1.1.0 waits until 20" in capsys.readouterr().out
    assert cli.main(["status", IMAGE, "--json"]) == 0
    assert '"tool_version": "1.1.0"' in capsys.readouterr().out

    assert cli.main(["rebuild", IMAGE, "--version", "1.1.0"]) == 2
    error = capsys.readouterr().err
    assert f"{IMAGE}: rebuild refused: release 1.1.0 is younger than min_release_age" in error
    assert "waits until 20" in error and "force" in error
    assert built(hour_ctx) == ["1.0.0"]

    assert cli.main(["rebuild", IMAGE, "--version", "1.1.0", "--force"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert built(hour_ctx) == ["1.0.0", "1.1.0"] and sent == [("build", IMAGE, run_id)]
    assert "waits" not in shown_status(hour_ctx)
    assert check(hour_ctx, IMAGE) is None  # the forced release does not wait again
    assert not isinstance(events(hour_ctx)[-1], ReleaseWaiting)

    assert cli.main(["status", IMAGE]) == 0
    assert "waits" not in capsys.readouterr().out


def test_rebuild_without_a_version_builds_the_newest_release_old_enough(
    hour_ctx: Context,
    server: PyPIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("workers.app.context", lambda: hour_ctx)
    monkeypatch.setattr("workers.base.dispatch", lambda *args: True)
    server.set_releases(IMAGE, ["2.0.0"], uploaded_at={"2.0.0": ago(minutes=5)})
    assert cli.main(["rebuild", IMAGE, "--force"]) == 2
    error = capsys.readouterr().err
    assert f"{IMAGE}: rebuild refused: no release is old enough yet: 2.0.0 waits until" in error
    server.set_releases(IMAGE, ["1.0.0", "2.0.0"], uploaded_at={"2.0.0": ago(minutes=5)})
    assert cli.main(["rebuild", IMAGE]) == 0
    assert built(hour_ctx) == ["1.0.0"]
