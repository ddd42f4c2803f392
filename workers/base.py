"""What every stage task shares: retry policy, failure recording, handing on to the next stage."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from shared.constants import RETRY_BACKOFF_MAX_S
from shared.errors import TRANSIENT, StageError
from shared.stages import record_stage_failure
from workers.app import app, context

log = logging.getLogger(__name__)

# The task that runs each stage, by stage name (sent by name: no import cycles, one routing table).
STAGE_TASKS = {
    "build": "workers.build.build",
    "test": "workers.testing.verify",
    "promote": "workers.promote.promote",
}


def dispatch(stage: str, image: str, run_id: str, attempt: str | None = None) -> None:
    """Enqueue `stage` of a run; the routing table sends it to the stage's queue.

    `attempt` re-sends a known attempt (its task id), which then takes its own lease back.
    """
    app.send_task(STAGE_TASKS[stage], args=[image, run_id], task_id=attempt or None)


class StageTask(Task):  # type: ignore[misc]
    """A pipeline stage: retried with backoff on transient errors, failures recorded as events."""

    abstract = True
    stage = ""
    autoretry_for = TRANSIENT
    max_retries = 5
    retry_backoff = 5
    retry_backoff_max = RETRY_BACKOFF_MAX_S
    # Full jitter (Celery's) can spend all retries within seconds of an outage starting; the
    # waits 5, 10, 20, 40, 80 s ride out a registry or Redis restart of over two minutes.
    retry_jitter = False
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Record the failure in the run's log, once, with a message naming image and stage."""
        image, run_id = args[0], args[1]
        if isinstance(exc, StageError):
            message = str(exc)
        elif isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            message = (
                f"{image}: {self.stage} failed: time limit of {self.time_limit} s reached; "
                f"raise FRESHEN_{self.stage.upper()}_TIME_LIMIT_S or fix what hangs"
            )
        else:
            message = f"{image}: {self.stage} failed: {type(exc).__name__}: {exc}"
        log.error("%s (run %s)", message, run_id)
        try:
            record_stage_failure(context(), image, self.stage, run_id, message)
        except Exception:  # the log is unreachable: the reconciler re-drives the run later
            log.exception("%s: could not record the failure of run %s", image, run_id)
