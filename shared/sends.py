"""Which stage tasks were sent and have not started yet: the reconciler never re-sends those.

Each stage attempt has a deterministic task id (run, stage, infrastructure retry, re-send), so
handing a run on twice (a redelivered task, two reconcilers) sends one message: the first sender
marks the id "queued" (SET NX), the task marks it "started" when a worker takes it. A mark that
outlives its TTL without the task starting counts as lost, and the reconciler sends anew.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from shared.constants import SENT_PREFIX
from shared.model.pipeline import longest_time_limit_s, spec

if TYPE_CHECKING:
    from shared.context import Context

log = logging.getLogger(__name__)

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


def describe(image: str, run_id: str | None = None) -> str:
    """How a task's arguments read in Flower's task list and the worker log (Celery's
    `argsrepr`): `image=awscli run=8a14…`, so a person finds a run's tasks by its id."""
    return f"image={image}" if run_id is None else f"image={image} run={run_id}"


# Image names a batch's shown arguments list before "…".
SHOWN_BATCH_IMAGES = 3


def describe_images(images: list[str]) -> str:
    """How a batch check's arguments read in Flower and the worker log: its first images and
    its size, `images=awscli,boto3,httpie,… (50)` (the full list is in the task's args)."""
    shown = ",".join(images[:SHOWN_BATCH_IMAGES]) + (
        ",…" if len(images) > SHOWN_BATCH_IMAGES else ""
    )
    return f"images={shown} ({len(images)})"


def described(text: str) -> dict[str, str]:
    """What `describe` wrote, read back from a task event's `args`: {"image": …, "run": …}."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


# Sends a Celery task by name: (task name, args, task id).
SendTask = Callable[[str, list[Any], str], object]


@dataclass(frozen=True)
class Dispatcher:
    """Hands runs on to stages: one message per attempt, whoever asks how often."""

    ctx: Context
    send_task: SendTask

    @property
    def ttl_s(self) -> int:
        """How long a sent task may wait in its queue before it counts as lost (the broker's
        visibility timeout: an unacknowledged message is redelivered after the same time)."""
        return 2 * longest_time_limit_s(self.ctx.settings)

    def __call__(self, stage: str, image: str, run_id: str, attempt: str | None = None) -> bool:
        """Enqueue `stage` of a run once; True if this call sent it.

        Without `attempt`, the task id is the run's next attempt id for the stage, and an
        attempt already sent is not sent again. `attempt` re-sends a known attempt (a lost one
        takes its own lease back).
        """
        client = self.ctx.redis
        if attempt is None:
            run = self.ctx.state(image).runs[run_id]
            attempt = attempt_id(run_id, stage, run.retries, run.sends.get(stage, 0))
            if not mark_queued(client, attempt, self.ttl_s):
                log.info("%s: run %s: %s attempt %s already sent", image, run_id, stage, attempt)
                return False
        else:
            mark_requeued(client, attempt, self.ttl_s)
        self.send_task(spec(stage).task, [image, run_id], attempt)
        return True
