"""A lease in Redis: one attempt at a time may work on a key (a run's stage, an image's tags).

The owner is the Celery task id. A task redelivered after its worker died carries the same id,
so it takes its own lease back at once; a duplicate task (another id) finds the lease taken.
The lease lasts the stage's hard time limit plus a little slack, so a lease whose remaining time
is within the slack was taken longer than a time limit ago: no attempt holding it can still run
(the reconciler relies on that). A stage that stops on a transient error keeps its lease for its
scheduled retry (same task id), so nobody resumes it meanwhile.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType

import redis

from shared.constants import LEASE_PREFIX, LEASE_SLACK_S, RETRY_BACKOFF_MAX_S
from shared.errors import TRANSIENT

# Delete the lease only if we still own it (it may have expired and been taken over).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Extend the lease only if we still own it.
_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@dataclass(frozen=True)
class LeaseView:
    """Who holds a lease and for how much longer (owner None: nobody)."""

    owner: str | None
    ttl_s: float

    @property
    def stale(self) -> bool:
        """Nobody holds it, or its holder was taken more than a time limit ago (so is dead)."""
        return self.owner is None or self.ttl_s <= LEASE_SLACK_S


def inspect(client: redis.Redis, name: str) -> LeaseView:
    """The current holder of lease `name`."""
    with client.pipeline(transaction=False) as pipe:
        pipe.get(LEASE_PREFIX + name)
        pipe.pttl(LEASE_PREFIX + name)
        owner, ttl_ms = pipe.execute()
    if owner is None:
        return LeaseView(None, 0.0)
    return LeaseView(owner.decode(), max(int(ttl_ms), 0) / 1000)


class Lease:
    """`with Lease(...) as held:`; `held` is False when another owner has it."""

    def __init__(self, client: redis.Redis, name: str, owner: str, time_limit_s: int) -> None:
        self._redis = client
        self._key = LEASE_PREFIX + name
        self._owner = owner
        self._ttl_s = time_limit_s + LEASE_SLACK_S
        self._held = False

    def acquire(self) -> bool:
        if self._redis.set(self._key, self._owner, nx=True, ex=self._ttl_s):
            self._held = True
        else:
            self._held = self._redis.get(self._key) == self._owner.encode()
            if self._held:
                self._redis.expire(self._key, self._ttl_s)
        return self._held

    def release(self) -> None:
        if self._held:
            self._redis.eval(_RELEASE, 1, self._key, self._owner)
            self._held = False

    def hold_for_retry(self) -> None:
        """Keep the lease through the longest retry wait plus the retry's own time limit."""
        if self._held:
            hold_s = RETRY_BACKOFF_MAX_S + self._ttl_s
            with suppress(*TRANSIENT):  # Redis itself may be what is down; the TTL still runs
                self._redis.eval(_HOLD, 1, self._key, self._owner, hold_s)
            self._held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, TRANSIENT):
            self.hold_for_retry()
            return
        with suppress(*TRANSIENT):  # unreleased, it expires with its time limit
            self.release()
