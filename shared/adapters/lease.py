"""A lease in Redis: one attempt at a time may work on a key (a run's stage, an image's tags).

The owner is the attempt id (the Celery task id). A task redelivered after its worker died
carries the same id, so it takes its own lease back at once; a duplicate (another id) finds the
lease taken. A live holder renews the lease every LEASE_HEARTBEAT_S (a heartbeat thread), and the
lease expires LEASE_TTL_S after the last renewal: once it is gone, no attempt can still be
working, whatever the stage's time limit (the reconciler relies on that). A stage that stops on
a transient error keeps its lease for its scheduled retry (same task id), so nobody resumes it
meanwhile; one that fails for good releases it.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType

import redis

from shared.constants import LEASE_HEARTBEAT_S, LEASE_PREFIX, LEASE_TTL_S, RETRY_BACKOFF_MAX_S
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
        """Nobody holds it: no attempt of its stage is alive."""
        return self.owner is None


def inspect(client: redis.Redis, name: str) -> LeaseView:
    """The current holder of lease `name`."""
    with client.pipeline(transaction=False) as pipe:
        pipe.get(LEASE_PREFIX + name)
        pipe.pttl(LEASE_PREFIX + name)
        owner, ttl_ms = pipe.execute()
    if owner is None:
        return LeaseView(None, 0.0)
    return LeaseView(owner.decode(), max(int(ttl_ms), 0) / 1000)


def release(client: redis.Redis, name: str, owner: str) -> bool:
    """Free lease `name` if `owner` holds it (a stage that failed for good)."""
    return bool(client.eval(_RELEASE, 1, LEASE_PREFIX + name, owner))


class Lease:
    """`with Lease(...) as held:`; `held` is False when another owner has it."""

    def __init__(
        self, client: redis.Redis, name: str, owner: str, ttl_s: int = LEASE_TTL_S
    ) -> None:
        self._redis = client
        self._key = LEASE_PREFIX + name
        self._owner = owner
        self._ttl_s = ttl_s
        self._held = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        if self._redis.set(self._key, self._owner, nx=True, ex=self._ttl_s):
            self._held = True
        else:
            self._held = self._redis.get(self._key) == self._owner.encode()
            if self._held:
                self._redis.expire(self._key, self._ttl_s)
        if self._held:
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=self._key)
            self._beat.start()
        return self._held

    def _heartbeat(self) -> None:
        interval = min(LEASE_HEARTBEAT_S, self._ttl_s / 3)
        while not self._stop.wait(interval):
            with suppress(*TRANSIENT):  # Redis down: the lease may lapse; the TTL decides
                if not self._redis.eval(_HOLD, 1, self._key, self._owner, self._ttl_s):
                    return  # taken over after it lapsed: stop claiming it

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None

    def release(self) -> None:
        self._stop_heartbeat()
        if self._held:
            self._redis.eval(_RELEASE, 1, self._key, self._owner)
            self._held = False

    def hold_for_retry(self) -> None:
        """Keep the lease through the longest retry wait plus one heartbeat lapse."""
        self._stop_heartbeat()
        if self._held:
            with suppress(*TRANSIENT):  # Redis itself may be what is down; the TTL still runs
                self._redis.eval(
                    _HOLD, 1, self._key, self._owner, RETRY_BACKOFF_MAX_S + self._ttl_s
                )
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
        with suppress(*TRANSIENT):  # unreleased, it expires LEASE_TTL_S later
            self.release()
