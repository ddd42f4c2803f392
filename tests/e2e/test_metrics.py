"""/metrics after a real run: two distinct check failures, then a release built, tested and
promoted by the real workers; a real metrics process, scraped and parsed with prometheus-client,
shows what the registry and the log hold, and a new process shows the same."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from shared.model import events as ev
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Pipeline
from tests.e2e.test_pipeline import check_now, release_tags
from tests.support.metrics_server import Samples, free_port, key, start_metrics_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

IMAGE = "awscli-metrics"
OUTCOMES = {
    "BuildSucceeded": ("build", "BuildStarted"),
    "TestsPassed": ("test", "TestStarted"),
    "Promoted": ("promote", "PromotionStarted"),
}


def of_image(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if ("image", IMAGE) in k[1]}


def stage_seconds(pipeline: Pipeline) -> dict[str, float]:
    """Stage → seconds from its start event to its outcome event, from the log's times."""
    at = {r.type: datetime.fromisoformat(r.at) for r in pipeline.ctx.store.read(IMAGE)}
    return {
        stage: (at[outcome] - at[start]).total_seconds()
        for outcome, (stage, start) in OUTCOMES.items()
    }


def test_metrics_after_a_real_run_survive_a_restart(pipeline: Pipeline) -> None:
    pipeline.pypi.set_response(IMAGE, body=b'{"releases": {"1.0": [')
    assert check_now(IMAGE) is None
    pipeline.pypi.set_releases(IMAGE, ["1.0; rm -rf /"])
    assert check_now(IMAGE) is None  # another error: a second CheckFailed
    pipeline.pypi.set_releases(IMAGE, ["1.46.3"])
    checked_after = time.time()
    run = pipeline.wait_for_run(IMAGE, check_now(IMAGE) or "")
    assert run.status == "done", run.error
    log = list(pipeline.ctx.store.read(IMAGE))
    failures = [r for r in log if isinstance(r.event, ev.CheckFailed)]
    assert len(failures) == 2

    port = free_port()
    server = start_metrics_server(REDIS_URL, port)
    try:
        samples = of_image(server.scrape())
    finally:
        assert server.stop() == 0
    tags = {
        dict(labels)["tag"]: dict(labels)
        for (name, labels), value in samples.items()
        if name == "freshen_tag_info" and value == 1
    }
    assert set(tags) == set(release_tags(run))
    for tag, labels in tags.items():
        assert labels["digest"] == run.digest == pipeline.tag_digest(IMAGE, tag), tag
        assert labels["version"] == "1.46.3"
    for status, count in (("done", 1), ("failed", 0), ("running", 0)):
        assert samples[key("freshen_runs", image=IMAGE, status=status)] == count, status
    assert samples[key("freshen_check_failures_total", image=IMAGE)] == len(failures)
    assert samples[key("freshen_check_failing", image=IMAGE)] == 0
    last_check = samples[key("freshen_last_successful_check_timestamp_seconds", image=IMAGE)]
    assert checked_after <= last_check <= time.time()
    counts = {
        dict(labels)["stage"]: value
        for (name, labels), value in samples.items()
        if name == "freshen_stage_duration_seconds_count"
    }
    outcomes = [r for r in log if r.type in OUTCOMES]
    assert counts == {"build": 1, "test": 1, "promote": 1} and len(outcomes) == 3
    for stage, seconds in stage_seconds(pipeline).items():
        labels = {"image": IMAGE, "stage": stage, "outcome": "succeeded"}
        assert samples[key("freshen_stage_duration_seconds_sum", **labels)] == pytest.approx(
            seconds, abs=1e-3
        )

    again = start_metrics_server(REDIS_URL, port)
    try:
        assert of_image(again.scrape()) == samples  # a new process: nothing reset
    finally:
        assert again.stop() == 0
