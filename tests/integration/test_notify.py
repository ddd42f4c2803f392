"""Notifications on a real Redis, a real `python -m shared.notify` process and a real HTTP
receiver on 127.0.0.1 (Apprise's json:// and form://): events are appended with the real
EventStore to throw-away images; what arrives is asserted on the receiver's side."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.adapters.eventstore import EventStore
from shared.model import events as ev
from shared.notify.outbox import FAILURES
from tests.support.metrics_server import free_port, key, start_metrics_server
from tests.support.notifier import NotifierProcess, append, failed_run, promoted_run
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
        failed_at = time.time()
        promoted_digest = promoted_run(store, "notify-a", "r-prom", "1.2.4")
        promoted_at = time.time()
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
        print(f"\n{kind}: failure after {(failure.at - failed_at) * 1000:.0f} ms, promotion "
              f"after {(promotion.at - promoted_at) * 1000:.0f} ms")  # fmt: skip
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
    assert up[key("freshen_notifications_unread_events")] == 0
    for _id, fields in failures:
        assert fields[b"target"] == b"json-1" and b"Connection" in fields[b"error"], fields
        assert TOKEN.encode() not in fields[b"error"]
    assert "Connection" in notifier.log() and TOKEN not in notifier.log()


def failure_ids(client: redis.Redis) -> set[str]:
    """Stream ids of the TestsFailed events in the global stream: the keys that must arrive."""
    return {
        sid.decode()
        for sid, fields in client.xrange("freshen:events")
        if b'"type":"TestsFailed"' in fields[b"e"]
    }


def test_kill_9_in_a_burst_of_50_loses_nothing_and_duplicates_are_counted(
    tmp_path: Path, store: EventStore, client: redis.Redis
) -> None:
    receiver = Receiver(delay_s=0.05)  # a slow service: the kill lands while sending
    receiver.start()
    settings = {"notify_urls": receiver.url("json", "burst/" + TOKEN), "notify_claim_idle_s": "1"}
    first = NotifierProcess(REDIS_URL, tmp_path / "one.log", notify_consumer="one", **settings)
    # A new container after a crash comes back under another name: it claims what `one` left.
    second = NotifierProcess(REDIS_URL, tmp_path / "two.log", notify_consumer="two", **settings)
    first.start()
    burst = threading.Thread(target=lambda: [
        (failed_run(store, "notify-burst", f"b{i:02d}", f"3.0.{i}"), time.sleep(0.04))
        for i in range(50)
    ])  # fmt: skip
    try:
        burst.start()
        receiver.wait_for(15, timeout_s=30)
        first.kill()
        killed_after = len({r.key for r in receiver.got()})
        second.start()
        burst.join()
        got = receiver.wait_for(50, timeout_s=60)
        time.sleep(2.0)  # a late second copy would be here
    finally:
        for process in (first, second):
            if process.process and process.process.poll() is None:
                process.kill()
        receiver.stop()
    got = receiver.got()
    copies = Counter(r.key for r in got)
    duplicates = sum(n - 1 for n in copies.values())
    resent = int(client.hget("freshen:notify:stats", f"resent:{target_id(client)}") or 0)
    print(f"\nkilled after {killed_after} of 50 delivered; {len(got)} received, {len(copies)} "
          f"distinct, duplicates {duplicates}; the notifier counted {resent} resent")  # fmt: skip
    assert set(copies) == failure_ids(client) and len(copies) == 50
    assert duplicates <= 1  # one crash: at most the message it was sending
    # Nothing left behind: no message kept, no outbox entry, nothing in flight.
    left = {k.decode() for k in client.keys("freshen:notify:*") if b":delivered:" not in k}
    assert left == {"freshen:notify:stats", "freshen:notify:targets"}
    assert resent >= duplicates  # every real duplicate was counted by the notifier


def target_id(client: redis.Redis) -> str:
    (only,) = client.hkeys("freshen:notify:targets")
    return str(only.decode())


def test_an_event_read_by_a_notifier_that_died_before_handing_it_on_is_claimed(
    tmp_path: Path, store: EventStore, client: redis.Redis
) -> None:
    receiver = Receiver()
    receiver.start()
    urls = receiver.url("json", "claimed/" + TOKEN)
    notifier = NotifierProcess(
        REDIS_URL, tmp_path / "n.log", notify_urls=urls, notify_claim_idle_s="1"
    )
    notifier.start()
    notifier.kill()
    failed_run(store, "notify-claim", "c1", "4.0.0")
    # A consumer reads the entries and dies before acknowledging them: they stay pending.
    read = client.xreadgroup("freshen:notify:group", "dead", {"freshen:events": ">"})
    assert sum(len(entries) for _, entries in read) == 5
    notifier.start()
    try:
        got = receiver.wait_for(1, timeout_s=20)
        time.sleep(1.0)
    finally:
        notifier.kill()
        receiver.stop()
    assert [r.key for r in receiver.got()] == sorted(failure_ids(client))
    assert got[0].payload["title"] == "freshen: notify-claim 4.0.0 failed in test"
    assert client.xpending("freshen:events", "freshen:notify:group")["pending"] == 0


def test_checks_notify_once_they_fail_longer_than_the_threshold(
    tmp_path: Path, store: EventStore
) -> None:
    receiver = Receiver()
    receiver.start()
    notifier = NotifierProcess(
        REDIS_URL, tmp_path / "n.log", notify_urls=receiver.url("json", "checks/" + TOKEN),
        notify_check_failing_s="3",
    )  # fmt: skip
    notifier.start()
    try:
        append(store, "notify-brief", ev.CheckFailed("notify-brief: PyPI answered 503"))
        append(store, "notify-long", ev.CheckFailed("notify-long: PyPI answered 503"))
        time.sleep(1)
        append(store, "notify-brief", ev.CheckRecovered())  # failed 1 s: nobody is told
        append(store, "notify-long", ev.CheckFailed("notify-long: PyPI timed out"))
        got = receiver.wait_for(1, timeout_s=15)
        time.sleep(3)  # the stretch goes on: still one notification
        append(store, "notify-long", ev.CheckRecovered())
        append(store, "notify-long", ev.CheckFailed("notify-long: index gone"))  # a new stretch
        receiver.wait_for(2, timeout_s=15)
        time.sleep(1)
    finally:
        notifier.kill()
        receiver.stop()
    got = receiver.got()
    assert [r.payload["title"] for r in got] == ["freshen: notify-long: checks failing for 3 s"] * 2
    assert "error: notify-long: PyPI timed out" in got[0].payload["message"]  # the latest error
    assert "error: notify-long: index gone" in got[1].payload["message"]
    assert len({r.key for r in got}) == 2


def test_the_notifier_joins_again_when_redis_lost_its_group(
    tmp_path: Path, store: EventStore, client: redis.Redis
) -> None:
    receiver = Receiver()
    receiver.start()
    notifier = NotifierProcess(
        REDIS_URL, tmp_path / "n.log", notify_urls=receiver.url("json", "again/" + TOKEN)
    )
    notifier.start()
    try:
        client.flushdb()  # the group, the outboxes, everything: as after restoring an old dump
        deadline = time.monotonic() + 20
        while not client.exists("freshen:events") and time.monotonic() < deadline:
            time.sleep(0.1)  # it notices on its next read and makes the group again
        failed_run(store, "notify-again", "g1", "5.0.0")
        got = receiver.wait_for(1, timeout_s=20)
    finally:
        notifier.kill()
        receiver.stop()
    assert [r.payload["title"] for r in got] == ["freshen: notify-again 5.0.0 failed in test"]
    assert "Redis: " in notifier.log()  # it said what happened
