"""Reconciliation on the real Redis and broker (no worker consumes the build queue here): 50 runs
waiting in the build queue are never sent twice, a lost message is sent once more, and an image
whose log cannot be read does not stop the others."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from shared import sends
from shared.adapters.eventstore import image_stream
from shared.context import Context
from shared.model.events import BuildFailed, LogUnreadable, RunResumed, RunRetried, TestsFailed
from shared.model.pipeline import Cause
from shared.stages.check import Upstream, start_run
from shared.stages.reconcile import reconcile
from shared.testing.images import define_quick
from tests.support.isolated import flushed_context
from workers.app import celery_config

REDIS_URL = "redis://127.0.0.1:6379/13"  # this module's own database, flushed before and after
BASE = "127.0.0.1:5000/library/debian-python:bookworm"
DIGEST = "sha256:" + "b" * 64
IMAGES = [f"img{i}" for i in range(5)]
BROKEN = "a-broken"  # sorts first: reconciled before every other image
VERSIONS = [f"1.0.{n}" for n in range(10)]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    for name in [*IMAGES, BROKEN]:
        define_quick(tmp_path / "images", name, "http://127.0.0.1:9/pypi", BASE, f"t/{name}")
    context = flushed_context(REDIS_URL, tmp_path / "images")
    yield context
    context.redis.flushdb()
    context.redis.close()


@pytest.fixture
def dispatcher(ctx: Context) -> Iterator[sends.Dispatcher]:
    app = Celery("reconcile-test")
    app.conf.update(celery_config(ctx.settings))

    def send(task: str, args: list[Any], task_id: str) -> None:
        app.send_task(task, args=args, task_id=task_id)

    yield sends.Dispatcher(ctx, send)
    app.close()


def queued_build_ids(client: redis.Redis) -> list[str]:
    """Task ids of the messages in the build queue, as the broker holds them."""
    ids = []
    for raw in client.lrange("build", 0, -1):
        message = json.loads(raw)
        assert json.loads(base64.b64decode(message["body"]))[0][1]  # [image, run id] arguments
        ids.append(message["headers"]["id"])
    return ids


def test_fifty_waiting_runs_are_never_sent_twice_and_a_broken_log_stops_nothing(
    ctx: Context, dispatcher: sends.Dispatcher
) -> None:
    runs: list[tuple[str, str]] = []
    for image in IMAGES:
        definition = ctx.definition(image)
        for version in VERSIONS:
            run_id, started = start_run(
                ctx, definition, Upstream(version, DIGEST), "rebuild", False
            )
            assert started and dispatcher("build", image, run_id)
            runs.append((image, run_id))
    ctx.redis.xadd(image_stream(BROKEN), {"e": b"\x00not an event"})
    ctx.redis.sadd("freshen:images", BROKEN)
    assert len(queued_build_ids(ctx.redis)) == 50

    # Every run is handed on again (a redelivered check) and reconciled over hours of waiting.
    for image, run_id in runs:
        assert not dispatcher("build", image, run_id)
    now = datetime.now(UTC)
    for hours in (1, 2, 5, 24):
        assert reconcile(ctx, dispatcher, now + timedelta(hours=hours)) == []
    ids = queued_build_ids(ctx.redis)
    assert len(ids) == 50 and max(Counter(ids).values()) == 1
    assert all(sends.state(ctx.redis, i) == sends.QUEUED for i in ids)

    # The broken image got one LogUnreadable naming it, however often it was reconciled.
    unreadable = [
        json.loads(fields[b"e"])
        for _, fields in ctx.redis.xrange(image_stream(BROKEN))
        if fields[b"e"].startswith(b"{")
    ]
    assert [u["type"] for u in unreadable] == [LogUnreadable.__name__]
    assert unreadable[0]["data"]["error"].startswith(f"{BROKEN}: reconcile failed")

    # A message lost with its mark (a broker crash): sent again once, under a new attempt id.
    image, run_id = runs[17]
    lost = next(i for i in ids if i.startswith(run_id))
    assert ctx.redis.lrem("build", 0, next(r for r in ctx.redis.lrange("build", 0, -1)
                                           if lost.encode() in r)) == 1  # fmt: skip
    ctx.redis.delete(sends.SENT_PREFIX + lost)
    assert reconcile(ctx, dispatcher, now + timedelta(hours=25)) == [run_id]
    assert reconcile(ctx, dispatcher, now + timedelta(hours=26)) == []
    ids = queued_build_ids(ctx.redis)
    assert len(ids) == 50 and max(Counter(ids).values()) == 1 and lost not in ids
    resumed = [r for r in ctx.store.read(image) if isinstance(r.event, RunResumed)]
    assert [r.event.run_id for r in resumed] == [run_id]


def test_an_infrastructure_failure_is_retried_once_per_backoff_and_a_test_failure_never(
    ctx: Context, dispatcher: sends.Dispatcher
) -> None:
    definition = ctx.definition(IMAGES[0])
    infra, _ = start_run(ctx, definition, Upstream("2.0.0", DIGEST), "rebuild", False)
    tests_failed, _ = start_run(ctx, definition, Upstream("2.0.1", DIGEST), "rebuild", False)
    ctx.store.append(
        IMAGES[0],
        [
            BuildFailed(infra, "img0: build failed: registry gone (after 5 retries)",
                        Cause.INFRASTRUCTURE),
            TestsFailed(tests_failed, DIGEST, "s3-cp", "AccessDenied"),
        ],
        ctx.store.length(IMAGES[0]),
    )  # fmt: skip
    now = datetime.now(UTC)
    backoff = ctx.settings.infra_retry_backoff_s
    assert reconcile(ctx, dispatcher, now + timedelta(seconds=backoff / 2)) == []
    assert reconcile(ctx, dispatcher, now + timedelta(seconds=backoff + 5)) == [infra]
    assert reconcile(ctx, dispatcher, now + timedelta(seconds=backoff + 10)) == []
    run = ctx.state(IMAGES[0]).runs[infra]
    assert (run.status, run.stage, run.retries) == ("running", "detected", 1)
    assert queued_build_ids(ctx.redis) == [sends.attempt_id(infra, "build", 1, 0)]
    assert ctx.state(IMAGES[0]).runs[tests_failed].status == "failed"
    retried = [r.event for r in ctx.store.read(IMAGES[0]) if isinstance(r.event, RunRetried)]
    assert retried == [RunRetried(infra, "build", 1)]
