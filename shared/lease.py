"""A lease in Redis: one attempt at a time may work on a key (a run's stage, an image's tags).

The owner is the Celery task id. A task redelivered after its worker died carries the same id,
so it takes its own lease back at once; a duplicate task (another id) finds the lease taken.
The lease expires after the stage's time limit, so a lost owner never blocks a run for good.
"""

from __future__ import annotations

import redis

from shared.constants import LEASE_PREFIX

# Delete the lease only if we still own it (it may have expired and been taken over).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """`with Lease(...) as held:`; `held` is False when another owner has it."""

    def __init__(self, client: redis.Redis, name: str, owner: str, ttl_s: int) -> None:
        self._redis = client
        self._key = LEASE_PREFIX + name
        self._owner = owner
        self._ttl_s = ttl_s
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

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
