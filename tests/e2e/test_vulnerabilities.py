"""The vulnerability gate on real parts: candidates built by the real workers, their installed
distributions read from the image, looked up in the PyPI double's `vulnerabilities`; each
image's policy decides (tests/e2e/vulnimages.py)."""

from __future__ import annotations

import time

import pytest

from shared.api import status
from shared.model import events as ev
from shared.model.pipeline import Cause
from tests.e2e.conftest import Pipeline
from tests.e2e.test_pipeline import check_now
from tests.e2e.vulnimages import DISTRIBUTION

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Shaped like PyPI's entries; the double serves it for vulntool 2.0.0.
ADVISORY = {
    "id": "PYSEC-2099-1",
    "aliases": ["CVE-2099-0001"],
    "details": "vulntool's parser runs what a crafted header says.\nMore text.",
    "fixed_in": ["2.0.3"],
    "link": "https://osv.dev/vulnerability/PYSEC-2099-1",
    "source": "osv",
    "summary": None,
    "withdrawn": None,
}
FLAWED, CLEAN, OUTAGE = "2.0.0", "1.9.0", "2.0.1"
SHOWN = "PYSEC-2099-1 in vulntool 2.0.0 (fixed in: 2.0.3)"


def checks(pipeline: Pipeline, image: str, run_id: str) -> list[ev.VulnerabilitiesChecked]:
    return [
        r.event
        for r in pipeline.ctx.store.read(image)
        if isinstance(r.event, ev.VulnerabilitiesChecked) and r.event.run_id == run_id
    ]


@pytest.fixture(scope="module")
def outage_run(pipeline: Pipeline) -> str:
    """A run whose vulnerability data stays unreadable (503), started before the others so that
    its retries (5 + 10 + 20 + 40 + 80 s) overlap their runs."""
    pipeline.pypi.set_release_response(DISTRIBUTION, OUTAGE, status=503, body=b"down")
    pipeline.pypi.set_vulnerabilities(DISTRIBUTION, FLAWED, [ADVISORY])
    pipeline.pypi.set_vulnerabilities(DISTRIBUTION, CLEAN, [])
    pipeline.pypi.set_releases("vuln-down", [OUTAGE])
    run_id = check_now("vuln-down")
    assert run_id
    return run_id


def test_block_keeps_a_vulnerable_release_off_every_tag(
    pipeline: Pipeline, outage_run: str
) -> None:
    image = "vuln-block"
    pipeline.pypi.set_releases(image, [CLEAN])
    good = pipeline.wait_for_run(image, check_now(image) or "")
    assert good.status == "done", good.error
    assert checks(pipeline, image, good.run_id)[0].summary.endswith("no known vulnerability")
    before = {t: pipeline.tag_digest(image, t) for t in ("latest", "1.9", CLEAN)}
    assert set(before.values()) == {good.digest}

    pipeline.pypi.set_releases(image, [CLEAN, FLAWED])
    bad = pipeline.wait_for_run(image, check_now(image) or "")
    assert (bad.status, bad.failed_stage, bad.cause) == ("failed", "test", Cause.DEFINITE)
    assert SHOWN in bad.error and "policy block: not promoted" in bad.error
    [checked] = checks(pipeline, image, bad.run_id)
    assert checked.blocked and checked.policy == "block" and checked.digest == bad.digest
    assert [(f.id, f.package, f.installed, f.fixed_in, f.aliases) for f in checked.findings] == [
        ("PYSEC-2099-1", DISTRIBUTION, FLAWED, ("2.0.3",), ("CVE-2099-0001",))
    ]
    assert checked.packages == 1 and checked.tool_version == FLAWED
    failed = [e for e in pipeline.ctx.store.read(image) if isinstance(e.event, ev.TestsFailed)]
    assert [f.event.failed_command for f in failed] == ["vulnerability gate"]  # type: ignore[union-attr]
    assert "Promoted" not in pipeline.event_types(image, bad.run_id)
    after = {t: pipeline.tag_digest(image, t) for t in ("latest", "1.9", CLEAN)}
    assert after == before
    assert pipeline.tag_digest(image, FLAWED) is None and pipeline.tag_digest(image, "2.0") is None
    assert SHOWN in repr(status(image))


def test_warn_promotes_and_records_the_finding(pipeline: Pipeline, outage_run: str) -> None:
    image = "vuln-warn"
    pipeline.pypi.set_releases(image, [FLAWED])
    run = pipeline.wait_for_run(image, check_now(image) or "")
    assert run.status == "done", run.error
    for tag in ("latest", "2.0", FLAWED):
        assert pipeline.tag_digest(image, tag) == run.digest, tag
    [checked] = checks(pipeline, image, run.run_id)
    assert not checked.blocked and checked.policy == "warn"
    assert [(f.id, f.installed, f.fixed_in, f.ignored) for f in checked.findings] == [
        ("PYSEC-2099-1", FLAWED, ("2.0.3",), "")
    ]
    assert SHOWN in checked.summary and SHOWN in repr(status(image))
    # The session's notifier tells of the promotion with a known vulnerability, once.
    assert pipeline.webhook is not None
    title = f"freshen: {image} {FLAWED}: 1 known vulnerability"
    deadline = time.monotonic() + 30
    while not (told := [r for r in pipeline.webhook.got() if r.payload["title"] == title]):
        assert time.monotonic() < deadline, [r.payload["title"] for r in pipeline.webhook.got()]
        time.sleep(0.2)
    time.sleep(1)  # a second copy would come right after the first
    told = [r for r in pipeline.webhook.got() if r.payload["title"] == title]
    assert len(told) == 1, told
    text = told[0].payload["message"]
    for line in (f"run: {run.run_id}", f"digest: {run.digest}", "fixed in 2.0.3"):
        assert line in text, (line, text)


def test_an_ignored_id_promotes_with_its_reason_recorded(
    pipeline: Pipeline, outage_run: str
) -> None:
    image = "vuln-ignore"
    pipeline.pypi.set_releases(image, [FLAWED])
    run = pipeline.wait_for_run(image, check_now(image) or "")
    assert run.status == "done", run.error
    assert pipeline.tag_digest(image, "latest") == run.digest
    [checked] = checks(pipeline, image, run.run_id)
    assert not checked.blocked
    assert [(f.id, f.ignored) for f in checked.findings] == [
        ("PYSEC-2099-1", "the flawed parser is never called here")
    ]


def test_unreadable_data_is_retried_then_the_run_is_blocked(
    pipeline: Pipeline, outage_run: str
) -> None:
    image = "vuln-down"
    run = pipeline.wait_for_run(image, outage_run, timeout_s=400)
    assert (run.status, run.failed_stage, run.cause) == ("failed", "test", Cause.INFRASTRUCTURE)
    assert f"run {run.run_id} is blocked: the vulnerability data could not be read" in run.error
    assert "policy block fails closed" in run.error and "HTTP 503" in run.error
    assert "policy block fails closed" in repr(status(image))
    asked = [p for _, p, _, _ in pipeline.pypi.requests if p == f"/pypi/vulntool/{OUTAGE}/json"]
    assert len(asked) >= 6 * 2  # six task attempts (five retries), each retried once by HTTP
    types = pipeline.event_types(image, run.run_id)
    assert types.count("TestStarted") == 1 and "TestsPassed" not in types
    assert checks(pipeline, image, run.run_id) == []
    assert (
        pipeline.tag_digest(image, "latest") is None and pipeline.tag_digest(image, OUTAGE) is None
    )
