"""The event log on a real Redis: atomic, position-checked appends; snapshots equal replays."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.adapters.eventstore import EventStore
from shared.adapters.lease import Lease
from shared.errors import ConcurrencyError
from shared.model import events as ev
from shared.model.projection import Projections, comparable, replay
from tests.conftest import REDIS_URL

BASE = "sha256:" + "b" * 64


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL)
    yield conn
    conn.close()


@pytest.fixture
def image() -> str:
    return f"es-{uuid.uuid4().hex[:10]}"


def detected(run_id: str) -> ev.ReleaseDetected:
    return ev.ReleaseDetected(run_id, "1.0.0", "python:3-alpine", BASE, "check")


def test_append_checks_the_expected_position(client: redis.Redis, image: str) -> None:
    store = EventStore(client)
    assert store.append(image, [detected("r1"), ev.BuildStarted("r1", "a")], 0) == 2
    with pytest.raises(ConcurrencyError):
        store.append(image, [ev.BuildStarted("r1", "b")], 1)
    assert [r.position for r in store.read(image)] == [0, 1]
    assert [r.type for r in store.read(image)] == ["ReleaseDetected", "BuildStarted"]
    assert image in store.images()


def test_racing_writers_at_one_position_append_once(client: redis.Redis, image: str) -> None:
    store = EventStore(client)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def write(n: int) -> None:
        conn = redis.Redis.from_url(REDIS_URL)
        barrier.wait()
        try:
            EventStore(conn).append(image, [detected(f"r{n}")], 0)
            won.append(f"r{n}")
        except ConcurrencyError:
            pass
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(won) == 1
    assert [r.event.run_id for r in store.read(image)] == won  # type: ignore[union-attr]


def test_events_also_land_on_the_global_stream_in_order(client: redis.Redis, image: str) -> None:
    store = EventStore(client)
    store.append(image, [detected("r1")], 0)
    store.append(image, [ev.BuildStarted("r1", "a")], 1)
    mine = [r for r in store.read_all() if r.image == image]
    assert [(r.position, r.type) for r in mine] == [(0, "ReleaseDetected"), (1, "BuildStarted")]


def test_live_projection_equals_replay(client: redis.Redis, image: str) -> None:
    store = EventStore(client)
    live = Projections(client, store)
    store.append(image, [detected("r1")], 0)
    assert live.load(image).runs["r1"].stage == "detected"  # snapshot saved at position 1
    store.append(image, [ev.BuildStarted("r1", "a"), ev.BuildFailed("r1", "boom")], 1)
    state = live.load(image)  # snapshot + tail
    assert state.position == 3 and state.runs["r1"].status == "failed"
    assert comparable(replay(store)[image]) == comparable(state)


def test_a_lease_admits_one_owner_and_its_redelivery(client: redis.Redis, image: str) -> None:
    with Lease(client, f"{image}:build", "task-1", 60) as held:
        assert held
        assert Lease(client, f"{image}:build", "task-1", 60).acquire()  # same task id
        assert not Lease(client, f"{image}:build", "task-2", 60).acquire()  # a duplicate
    assert Lease(client, f"{image}:build", "task-2", 60).acquire()  # released


def test_a_log_written_by_an_older_freshen_upgrades_and_live_equals_replay(
    client: redis.Redis, image: str
) -> None:
    """Events of version 1 (BuildFailed before `cause`) and a snapshot saved by an older fold:
    the events are upcast when read, the old snapshot is not trusted but rebuilt, and the live
    state equals a replay from scratch."""
    import json

    from shared.adapters.eventstore import image_stream
    from shared.constants import GLOBAL_STREAM, IMAGES_SET, SNAPSHOT_PREFIX
    from shared.model.pipeline import Cause
    from shared.model.projection import FOLD_VERSION

    old_docs = [
        {"type": "ReleaseDetected", "schema": 1, "data": {
            "run_id": "r1", "tool_version": "1.0.0", "base_image": "python:3-alpine",
            "base_digest": BASE, "reason": "check"}},
        {"type": "BuildStarted", "schema": 1, "data": {"run_id": "r1", "attempt": "a1"}},
        {"type": "BuildFailed", "schema": 1, "data": {
            "run_id": "r1", "error": f"{image}: build failed: boom", "stage": "build"}},
    ]  # fmt: skip
    for position, doc in enumerate(old_docs):
        raw = json.dumps({**doc, "image": image, "position": position, "at": "2026-01-01T00:00:0Z"})
        client.xadd(image_stream(image), {"e": raw})
        client.xadd(GLOBAL_STREAM, {"e": raw})
    client.sadd(IMAGES_SET, image)
    # What the previous fold saved: no fold version, and a state this fold would not produce.
    stale = {"name": image, "position": 3, "last_stream_id": "9999999999999-0", "runs": {},
             "tags": {"latest": {"digest": BASE, "tool_version": "0.1", "run_id": "x"}},
             "check_error": ""}  # fmt: skip
    client.hset(SNAPSHOT_PREFIX + image, mapping={"position": 3, "state": json.dumps(stale)})

    store = EventStore(client)
    live = Projections(client, store).load(image)
    assert live.tags == {} and live.runs["r1"].status == "failed"
    assert live.runs["r1"].cause == Cause.DEFINITE and live.runs["r1"].failed_stage == "build"
    assert client.hget(SNAPSHOT_PREFIX + image, "fold") == str(FOLD_VERSION).encode()
    assert comparable(replay(store)[image]) == comparable(live)
    assert comparable(Projections(client, store).load(image)) == comparable(live)  # new snapshot


def test_a_secret_in_an_event_is_masked_before_it_is_stored(
    client: redis.Redis, image: str
) -> None:
    """Defence in depth: whatever text an event carries (an upstream's error message echoing a
    token), no spelling of a configured secret reaches the log."""
    import base64

    from shared.secrets import MASK, Masker

    secret = "ghp_Zq8vN3xDistinctive"
    store = EventStore(client, Masker.of([secret]))
    leaked = base64.b64encode(f"x:{secret}".encode()).decode()
    store.append(image, [ev.CheckFailed(f"{image}: check failed: 401 for {secret} ({leaked})")], 0)
    raw = b"".join(fields[b"e"] for _, fields in client.xrange(f"freshen:image:{image}"))
    assert secret.encode() not in raw and base64.b64encode(secret.encode()) not in raw
    error = next(iter(store.read(image))).event.error  # type: ignore[attr-defined]
    assert error.count(MASK) == 2 and leaked not in error
