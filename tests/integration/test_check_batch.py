"""A batch of checks (what beat sends) through the real check stage: the real Redis (its own
database), the real registry for base digests and a local PyPI. Each image of the batch is
checked on its own: one that fails is recorded under its name and the others go on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.adapters.eventstore import image_stream
from shared.constants import LAST_CHECK_KEY, SNAPSHOT_PREFIX
from shared.context import Context
from shared.stages.checkbatch import check_batch
from shared.testing.images import define_quick
from shared.testing.pypi_server import PyPIServer
from tests.conftest import BASE_IMAGE
from tests.support.isolated import flushed_context

REDIS_URL = "redis://127.0.0.1:6379/1"  # this module's own database, flushed before and after
# In name order, as beat batches them: the failing ones sit between images that are fine.
BATCH = ["a-fine", "b-pypi-down", "c-broken", "d-no-base", "e-bad-log", "f-fine"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pypi() -> Iterator[PyPIServer]:
    with PyPIServer() as running:
        yield running


@pytest.fixture
def ctx(tmp_path: Path, pypi: PyPIServer) -> Iterator[Context]:
    images = tmp_path / "images"
    for name in BATCH:
        base = f"{BASE_IMAGE.rsplit(':', 1)[0]}:no-such-tag" if name == "d-no-base" else BASE_IMAGE
        define_quick(images, name, pypi.index, base, f"freshen-test/{name}")
        pypi.set_releases(name, ["1.0.0"])
    pypi.set_response("b-pypi-down", status=500, body=b"down")
    toml = images / "c-broken" / "image.toml"
    toml.write_text(toml.read_text().replace("freshen-test/c-broken", "Not A/Repository!"))
    context = flushed_context(REDIS_URL, images, http_retries=0)
    # Its log is not a stream (a hand-made key): reading its state fails, as no check expects.
    context.redis.set(image_stream("e-bad-log"), "not a stream")
    yield context
    context.redis.flushdb()
    context.redis.close()


def types(ctx: Context, image: str) -> list[str]:
    return [r.type for r in ctx.store.read(image)]


def test_a_failing_image_is_recorded_under_its_name_and_the_rest_of_the_batch_is_checked(
    ctx: Context, pypi: PyPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    handed_on: list[tuple[str, str]] = []
    started = check_batch(ctx, BATCH, on_started=lambda i, r: handed_on.append((i, r)))

    assert sorted(started) == ["a-fine", "f-fine"]  # after four failures, f-fine still ran
    assert sorted(handed_on) == sorted(started.items())
    for image in ("a-fine", "f-fine"):
        assert types(ctx, image) == ["ReleaseDetected"]
    pypi_down = ctx.state("b-pypi-down").check_error
    assert pypi_down.startswith("b-pypi-down: check failed") and "500" in pypi_down
    assert ctx.state("c-broken").definition_error.startswith("c-broken: definition broken")
    no_base = ctx.state("d-no-base").check_error
    assert no_base.startswith("d-no-base: check failed") and "no-such-tag" in no_base
    assert "e-bad-log: check failed unexpectedly" in caplog.text  # logged: its log is unusable
    checked = {k.decode() for k in ctx.redis.hkeys(LAST_CHECK_KEY)}  # type: ignore[union-attr]
    assert checked == {"a-fine", "f-fine"}

    # The next batch finds nothing new: no event, one conditional PyPI request per fine image.
    ctx.redis.delete(image_stream("e-bad-log"))
    before = {image: types(ctx, image) for image in BATCH}
    asked = len(pypi.requests)
    again = check_batch(ctx, BATCH, on_started=lambda i, r: handed_on.append((i, r)))
    assert list(again) == ["e-bad-log"]  # its log readable again: its first run
    assert {image: types(ctx, image) for image in BATCH if image != "e-bad-log"} == {
        image: events for image, events in before.items() if image != "e-bad-log"
    }
    fine = [status for _, path, status, _ in pypi.requests[asked:] if "fine" in path]
    assert fine == [304, 304]
    assert ctx.redis.exists(SNAPSHOT_PREFIX + "a-fine")
