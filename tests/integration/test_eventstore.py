"""The event log on a real Redis: atomic, position-checked appends; snapshots equal replays."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared import events as ev
from shared.errors import ConcurrencyError
from shared.eventstore import EventStore
from shared.lease import Lease
from shared.projection import Projections, comparable, replay
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
