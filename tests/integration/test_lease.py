"""Leases on the real Redis: one owner at a time, held for a retry, readable by the reconciler."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.adapters.lease import Lease, inspect
from shared.constants import LEASE_PREFIX, RETRY_BACKOFF_MAX_S
from shared.errors import StageError, TransientError

REDIS_URL = "redis://127.0.0.1:6379/12"  # the fault suite's database; keys here are unique

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    yield connection
    connection.close()


@pytest.fixture
def name(client: redis.Redis) -> Iterator[str]:
    key = f"test-lease-{uuid.uuid4().hex}"
    yield key
    client.delete(LEASE_PREFIX + key)


def test_one_owner_at_a_time_and_the_same_owner_takes_it_back(
    client: redis.Redis, name: str
) -> None:
    with Lease(client, name, "a1", 60) as held:
        assert held
        assert not Lease(client, name, "a2", 60).acquire()
        again = Lease(client, name, "a1", 60)
        assert again.acquire()  # a redelivered attempt
        again.release()
        assert Lease(client, name, "a1", 60).acquire()
        view = inspect(client, name)
        assert view.owner == "a1" and 55 < view.ttl_s <= 60
        assert not view.stale
    assert inspect(client, name).owner is None and inspect(client, name).stale


def test_a_transient_error_keeps_the_lease_for_the_retry(client: redis.Redis, name: str) -> None:
    with pytest.raises(TransientError), Lease(client, name, "a1", 60):
        raise TransientError("registry away")
    view = inspect(client, name)
    assert view.owner == "a1" and view.ttl_s > RETRY_BACKOFF_MAX_S + 55
    assert Lease(client, name, "a1", 60).acquire()  # the retry carries the same task id


def test_a_failure_releases_the_lease(client: redis.Redis, name: str) -> None:
    with pytest.raises(StageError), Lease(client, name, "a1", 60):
        raise StageError("img", "build", "broken")
    assert inspect(client, name).owner is None


def test_a_live_holder_renews_its_lease_and_a_dead_one_lets_it_lapse(
    client: redis.Redis, name: str
) -> None:
    """The heartbeat: a lease of 3 s held for 5 s stays; once its holder stops renewing it
    (a killed worker), it lapses within its TTL and the stage is free to resume."""
    lease = Lease(client, name, "a1", 3)
    assert lease.acquire()
    time.sleep(5)
    assert inspect(client, name).owner == "a1"
    lease._stop_heartbeat()  # what a kill -9 does to the heartbeat thread
    time.sleep(3.5)
    assert inspect(client, name).stale
