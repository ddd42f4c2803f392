"""Leases on the real Redis: one owner at a time, held for a retry, readable by the reconciler."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.constants import LEASE_PREFIX, LEASE_SLACK_S, RETRY_BACKOFF_MAX_S
from shared.errors import StageError, TransientError
from shared.lease import Lease, inspect

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
        assert Lease(client, name, "a1", 60).acquire()  # a redelivered attempt
        view = inspect(client, name)
        assert view.owner == "a1" and 60 < view.ttl_s <= 60 + LEASE_SLACK_S
        assert not view.stale
    assert inspect(client, name).owner is None and inspect(client, name).stale


def test_a_transient_error_keeps_the_lease_for_the_retry(client: redis.Redis, name: str) -> None:
    with pytest.raises(TransientError), Lease(client, name, "a1", 60):
        raise TransientError("registry away")
    view = inspect(client, name)
    assert view.owner == "a1" and view.ttl_s > RETRY_BACKOFF_MAX_S + 60
    assert Lease(client, name, "a1", 60).acquire()  # the retry carries the same task id


def test_a_failure_releases_the_lease(client: redis.Redis, name: str) -> None:
    with pytest.raises(StageError), Lease(client, name, "a1", 60):
        raise StageError("img", "build", "broken")
    assert inspect(client, name).owner is None


def test_a_lease_within_its_slack_is_stale(client: redis.Redis, name: str) -> None:
    client.set(LEASE_PREFIX + name, "a1", ex=LEASE_SLACK_S)
    assert inspect(client, name).stale
