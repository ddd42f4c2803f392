"""Notifications on a real Redis, a real `python -m shared.notify` process and a real HTTP
receiver on 127.0.0.1 (Apprise's json:// and form://): events are appended with the real
EventStore to throw-away images; what arrives is asserted on the receiver's side."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.eventstore import EventStore
from shared.notify.outbox import FAILURES
from tests.support.metrics_server import free_port, key, start_metrics_server
from tests.support.notifier import NotifierProcess, failed_run, promoted_run
from tests.support.receiver import Receiver

REDIS_URL = "redis://127.0.0.1:6379/5"  # this module's own database (flushed)
TOKEN = "Zq8tok3nDistinctive"  # inside the receiver URLs: must never show in logs or records


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def store(client: redis.Redis) -> EventStore:
    return EventStore(client)


def distinct_run(prefix: str) -> str:
    return f"{prefix}{time.time_ns() % 10**9}"


def test_a_failure_and_a_promotion_arrive_once_each_with_what_to_act_on(
    tmp_path: Path, store: EventStore
) -> None:
    receiver = Receiver()
    receiver.start()
    urls = f"{receiver.url('json', 'j/' + TOKEN)} {receiver.url('form', 'f/' + TOKEN)}"
    notifier = NotifierProcess(REDIS_URL, tmp_path / "notify.log", notify_urls=urls)
    notifier.start()
    try:
        failed_digest = failed_run(store, "notify-a", "r-fail", "1.2.3")
        promoted_digest = promoted_run(store, "notify-a", "r-prom", "1.2.4")
        for path in ("j/", "f/"):
            got = receiver.wait_for(2, timeout_s=20, path=path)
        time.sleep(1.0)  # anything sent twice would arrive by now
    finally:
        notifier.kill()
        receiver.stop()
    for path, kind in (("j/", "application/json"), ("f/", "application/x-www-form-urlencoded")):
        got = receiver.got(path)
        assert len(got) == 2 and len({r.key for r in got}) == 2, got
        assert all(r.content_type.startswith(kind) for r in got)
        failure, promotion = sorted(got, key=lambda r: r.payload["type"])
        assert failure.payload["type"] == "failure"
        assert failure.payload["title"] == "freshen: notify-a 1.2.3 failed in test"
        text = failure.payload["message"]
        for expected in (
            "image: notify-a", "version: 1.2.3", "run: r-fail", f"digest: {failed_digest}",
            "failing command: s3-cp", "AccessDenied (line 2)",
            "rebuild: freshen rebuild notify-a --version 1.2.3 --force",
        ):  # fmt: skip
            assert expected in text, (expected, text)
        assert promotion.payload["type"] == "success"
        assert promotion.payload["title"] == "freshen: notify-a 1.2.4 promoted"
        text = promotion.payload["message"]
        for expected in (
            "image: notify-a", "version: 1.2.4", "run: r-prom", f"digest: {promoted_digest}",
            f"1.2.4: new -> {promoted_digest[:19]}", f"1.2: sha256:000000000000 -> "
            f"{promoted_digest[:19]}", f"latest: sha256:000000000000 -> {promoted_digest[:19]}",
            "rebuild: freshen rebuild notify-a --version 1.2.4 --force",
        ):  # fmt: skip
            assert expected in text, (expected, text)
    assert TOKEN not in notifier.log()


def test_a_receiver_down_for_30_s_gets_each_notification_once_when_back(
    tmp_path: Path, store: EventStore, client: redis.Redis
) -> None:
    receiver = Receiver()  # its port is chosen, nothing listens yet
    notifier = NotifierProcess(
        REDIS_URL, tmp_path / "notify.log", notify_urls=receiver.url("json", "down/" + TOKEN),
        notify_retry_initial_s="1", notify_retry_max_s="5", log_level="DEBUG",
    )  # fmt: skip
    port = free_port()
    metrics = start_metrics_server(REDIS_URL, port)
    notifier.start()
    try:
        sent_at = time.time()
        failed_run(store, "notify-down", "r-down1", "2.0.0")
        promoted_run(store, "notify-down", "r-down2", "2.0.1")
        time.sleep(30)
        down = metrics.scrape()
        failures = client.xrange(FAILURES)
        receiver.start()
        back_at = time.time()
        got = receiver.wait_for(2, timeout_s=20)
        delivered_at = max(r.at for r in got)
        time.sleep(6)  # longer than the longest retry wait: a second copy would be here
        up = metrics.scrape()
    finally:
        notifier.kill()
        metrics.stop()
        receiver.stop()
    got = receiver.got()
    print(f"\nreceiver down {back_at - sent_at:.1f} s; delivered {delivered_at - back_at:.1f} s "
          f"after it came back; {len(failures)} failed attempts recorded")  # fmt: skip
    assert Counter(r.key for r in got).most_common(1)[0][1] == 1, got
    assert len(got) == 2
    assert len(failures) >= 5  # retried with backoff while down, each failure recorded
    target = {"target": "json-1"}
    assert down[key("freshen_notifications_pending", **target)] == 2
    assert down[key("freshen_notifications_failed_total", **target)] == len(failures)
    assert up[key("freshen_notifications_pending", **target)] == 0
    assert up[key("freshen_notifications_delivered_total", **target)] == 2
    for _id, fields in failures:
        assert fields[b"target"] == b"json-1" and b"Connection" in fields[b"error"], fields
        assert TOKEN.encode() not in fields[b"error"]
    assert "Connection" in notifier.log() and TOKEN not in notifier.log()
