"""Which stage tasks were sent and have not started yet: the reconciler never re-sends those.

Each stage attempt has a deterministic task id (run, stage, infrastructure retry, re-send), so
handing a run on twice (a redelivered task, two reconcilers) sends one message: the first sender
marks the id "queued" (SET NX), the task marks it "started" when a worker takes it. A mark that
outlives its TTL without the task starting counts as lost, and the reconciler sends anew.
"""

from __future__ import annotations

import redis

from shared.constants import SENT_PREFIX

QUEUED = "queued"
STARTED = "started"


def attempt_id(run_id: str, stage: str, retry: int, send: int) -> str:
    """The task id of a stage attempt: the same inputs give the same id."""
    return f"{run_id}-{stage}-r{retry}s{send}"


def mark_queued(client: redis.Redis, task_id: str, ttl_s: int) -> bool:
    """True if this caller is the first to send `task_id` (so it must send it)."""
    return bool(client.set(SENT_PREFIX + task_id, QUEUED, nx=True, ex=ttl_s))


def mark_requeued(client: redis.Redis, task_id: str, ttl_s: int) -> None:
    """A known attempt is sent again (a lost attempt resumed under its own id)."""
    client.set(SENT_PREFIX + task_id, QUEUED, ex=ttl_s)


def mark_started(client: redis.Redis, task_id: str, ttl_s: int) -> None:
    client.set(SENT_PREFIX + task_id, STARTED, ex=ttl_s)


def state(client: redis.Redis, task_id: str) -> str | None:
    """ "queued", "started" or None (never sent, or the mark lapsed)."""
    raw = client.get(SENT_PREFIX + task_id)
    return raw.decode() if isinstance(raw, bytes) else raw
