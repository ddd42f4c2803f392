"""/metrics on a real Redis: a real `python -m shared.metrics` process scraped over HTTP and read
with prometheus-client's own parser; the values equal what the log recorded, stay the same on a
second scrape and after a restart (derived from the log, not counted in memory)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from shared.constants import LAST_CHECK_KEY
from shared.context import Context
from shared.model import events as ev
from shared.model.pipeline import Cause
from tests.support.isolated import flushed_context
from tests.support.metrics_server import Samples, free_port, start_metrics_server

# A database of this test's own (flushed by it).
REDIS_DB2 = "redis://127.0.0.1:6379/2"
BASE = "sha256:" + "b" * 64
DIGEST = "sha256:" + "d" * 64
STAGE_S = 0.3  # how long each recorded stage lasts, at least


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    (tmp_path / "images").mkdir()
    context = flushed_context(REDIS_DB2, tmp_path / "images")
    yield context
    context.redis.flushdb()
    context.redis.close()


def record(ctx: Context, image: str, *new: ev.Event) -> None:
    ctx.record(image, lambda _state: list(new))


def stage(ctx: Context, image: str, start: ev.Event, outcome: ev.Event) -> None:
    record(ctx, image, start)
    time.sleep(STAGE_S)
    record(ctx, image, outcome)


def detected(run_id: str, version: str) -> ev.ReleaseDetected:
    return ev.ReleaseDetected(run_id, version, "python:3-alpine", BASE, "check")


def history(ctx: Context) -> None:
    """Image `tool`: a run promoted, a run whose tests failed, a run retried after an
    infrastructure failure (building again), two distinct check failures then a recovery, an
    audit that found drift, and an impossible event written past the rules (refused on fold)."""
    record(ctx, "tool", detected("r1", "1.0.0"))
    stage(ctx, "tool", ev.BuildStarted("r1", "a1"), ev.BuildSucceeded("r1", DIGEST, "alpine", "3"))
    stage(ctx, "tool", ev.TestStarted("r1", "a2"), ev.TestsPassed("r1", DIGEST, ()))
    moves = tuple(ev.TagMove(t, "", DIGEST) for t in ("1.0.0", "1.0", "latest"))
    record(ctx, "tool", ev.PromotionStarted("r1", "a3"))
    record(ctx, "tool", ev.PromotionPlanned("r1", "a3", moves, ()))
    time.sleep(STAGE_S)
    record(ctx, "tool", ev.Promoted("r1", DIGEST, "1.0.0", ("1.0.0", "1.0", "latest")))
    record(ctx, "tool", ev.VersionsCommitted("r1", "c0ffee", "awscli-1.0.0"), ev.RunCompleted("r1"))
    record(ctx, "tool", ev.CheckFailed("tool: check failed: one"))
    record(ctx, "tool", ev.CheckFailed("tool: check failed: two"), ev.CheckRecovered())
    other = "sha256:" + "e" * 64
    record(ctx, "tool", detected("r2", "1.1.0"))
    stage(ctx, "tool", ev.BuildStarted("r2", "b1"), ev.BuildSucceeded("r2", other, "alpine", "3"))
    # A lost attempt resumed: the stage lasts from its first start to its outcome.
    record(ctx, "tool", ev.TestStarted("r2", "b2"))
    time.sleep(STAGE_S)
    record(ctx, "tool", ev.RunResumed("r2", "test", "b2", ev.RESUMED_LOST))
    stage(ctx, "tool", ev.TestStarted("r2", "b2"), ev.TestsFailed("r2", other, "s3-cp", "boom"))
    record(ctx, "tool", detected("r3", "1.2.0"))
    lost = ev.BuildFailed("r3", "worker lost", Cause.INFRASTRUCTURE)
    stage(ctx, "tool", ev.BuildStarted("r3", "c1"), lost)
    record(ctx, "tool", ev.RunRetried("r3", "build", 1))
    record(ctx, "tool", ev.BuildStarted("r3", "c2"))
    drift = ev.TagFinding("latest", DIGEST, "sha256:" + "f" * 64, "untested")
    record(ctx, "tool", ev.AuditRecorded((drift,)))
    # Past the rules: r1 is done; folding refuses these, so no build is counted for them.
    again = [ev.BuildStarted("r1", "x"), ev.BuildSucceeded("r1", DIGEST, "alpine", "3")]
    ctx.store.append("tool", again, ctx.state("tool").position)
    record(ctx, "quiet", detected("q1", "2.0.0"))


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def stage_seconds(ctx: Context, image: str) -> dict[tuple[str, str], list[float]]:
    """(stage, outcome) → each finished stage's duration, read straight from the log's times."""
    at: dict[tuple[str, str], str] = {}
    for r in ctx.store.read(image):  # the first of each: refused events come later
        at.setdefault((r.type, getattr(r.event, "run_id", "")), r.at)

    def seconds(start: str, end: str, run: str) -> float:
        return seconds_between(at[(start, run)], at[(end, run)])

    return {
        ("build", "succeeded"): [
            seconds("BuildStarted", "BuildSucceeded", r) for r in ("r1", "r2")
        ],
        ("test", "succeeded"): [seconds("TestStarted", "TestsPassed", "r1")],
        ("test", "failed"): [seconds("TestStarted", "TestsFailed", "r2")],
        ("promote", "succeeded"): [seconds("PromotionStarted", "Promoted", "r1")],
    }


def assert_values(samples: Samples, ctx: Context) -> None:
    tags = {
        dict(labels)["tag"]: dict(labels)
        for (name, labels), value in samples.items()
        if name == "freshen_tag_info" and dict(labels)["image"] == "tool" and value == 1
    }
    assert set(tags) == {"1.0.0", "1.0", "latest"}
    assert {(t["version"], t["digest"]) for t in tags.values()} == {("1.0.0", DIGEST)}
    tool = (("image", "tool"),)
    runs = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "freshen_runs" and dict(labels)["image"] == "tool"
    }
    assert runs == {"done": 1, "failed": 1, "running": 1}
    assert samples[("freshen_check_failures_total", tool)] == 2
    assert samples[("freshen_check_failing", tool)] == 0
    assert samples[("freshen_audit_drift", tool)] == 1
    assert samples[("freshen_promotions_held", tool)] == 0
    assert samples[("freshen_last_successful_check_timestamp_seconds", tool)] == 1764560000.5
    expected = stage_seconds(ctx, "tool")
    # The retried build's first attempt ended in an infrastructure failure.
    counts = {
        (dict(labels)["stage"], dict(labels)["outcome"]): value
        for (name, labels), value in samples.items()
        if name == "freshen_stage_duration_seconds_count" and dict(labels)["image"] == "tool"
    }
    assert counts == {key: len(v) for key, v in expected.items()} | {("build", "failed"): 1}
    for (stage_name, outcome), durations in expected.items():
        labels = tuple(sorted({"image": "tool", "stage": stage_name, "outcome": outcome}.items()))
        total = samples[("freshen_stage_duration_seconds_sum", labels)]
        assert total == pytest.approx(sum(durations), abs=1e-3)
        assert total >= STAGE_S * len(durations)
    quiet = {
        k: v for k, v in samples.items() if ("image", "quiet") in k[1] and k[0] == "freshen_runs"
    }
    assert sum(quiet.values()) == 1


@pytest.mark.timeout(120)
def test_metrics_equal_the_log_and_survive_a_restart(ctx: Context) -> None:
    history(ctx)
    ctx.redis.hset(LAST_CHECK_KEY, "tool", "1764560000.5")
    port = free_port()
    server = start_metrics_server(REDIS_DB2, port)
    try:
        first = server.scrape()
        assert_values(first, ctx)
        assert server.scrape() == first  # a second scrape reads nothing twice
    finally:
        assert server.stop() == 0  # SIGTERM ends it cleanly
    again = start_metrics_server(REDIS_DB2, port)
    try:
        assert again.scrape() == first  # a new process: the same values, from the log
        time.sleep(STAGE_S)
        record(ctx, "tool", ev.BuildSucceeded("r3", DIGEST, "alpine", "3"))
        after = again.scrape()
        retried = (("image", "tool"), ("outcome", "succeeded"), ("stage", "build"))
        assert after[("freshen_stage_duration_seconds_count", retried)] == 3
        # The retried build lasted from its second start (the last BuildStarted of r3).
        added = (
            after[("freshen_stage_duration_seconds_sum", retried)]
            - first[("freshen_stage_duration_seconds_sum", retried)]
        )
        at = {(r.type, getattr(r.event, "run_id", "")): r.at for r in ctx.store.read("tool")}
        lasted = seconds_between(at[("BuildStarted", "r3")], at[("BuildSucceeded", "r3")])
        assert added == pytest.approx(lasted, abs=1e-3) and lasted >= STAGE_S
    finally:
        assert again.stop() == 0
