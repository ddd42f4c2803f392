"""What every stage task shares: retry policy, failure recording, handing on to the next stage."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded

from shared import sends
from shared.adapters import lease
from shared.constants import RETRY_BACKOFF_MAX_S
from shared.errors import TRANSIENT, StageError
from shared.model.pipeline import Cause
from shared.stages import lease_name, record_stage_failure
from workers.app import app, context

log = logging.getLogger(__name__)
# Removes a failed run's candidate tag; on the promote queue, whose workers hold the registry
# credentials that deleting needs (a test worker never does).
CLEANUP_TASK = "workers.promote.cleanup"


def _send(task: str, args: list[Any], task_id: str) -> None:
    app.send_task(task, args=args, task_id=task_id, argsrepr=sends.describe(*args))


def dispatch(stage: str, image: str, run_id: str, attempt: str | None = None) -> bool:
    """Enqueue `stage` of a run once (shared/sends.py); True if this call sent it."""
    return sends.Dispatcher(context(), _send)(stage, image, run_id, attempt)


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

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        ctx = context()
        sends.mark_started(ctx.redis, task_id, sends.Dispatcher(ctx, _send).ttl_s)

    def wait_and_resend(self, countdown_s: float) -> None:
        """Send this very attempt again later without spending a transient-error retry; it
        counts as queued meanwhile, so the reconciler does not send another attempt."""
        ctx = context()
        sends.mark_requeued(ctx.redis, self.request.id, sends.Dispatcher(ctx, _send).ttl_s)
        self.apply_async(
            args=self.request.args,
            task_id=self.request.id,
            argsrepr=sends.describe(*self.request.args),
            countdown=countdown_s,
            retries=self.request.retries,
        )
        raise Ignore()

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Record the failure in the run's log, once, with a message naming image and stage,
        and free the stage's lease (a stage that failed for good holds nothing)."""
        image, run_id = args[0], args[1]
        cause = Cause.DEFINITE
        if isinstance(exc, StageError):
            message = str(exc)
        elif isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            message = (
                f"{image}: {self.stage} failed: time limit of {self.time_limit} s reached; "
                f"raise FRESHEN_{self.stage.upper()}_TIME_LIMIT_S or fix what hangs"
            )
        else:
            message = f"{image}: {self.stage} failed: {type(exc).__name__}: {exc}"
            if isinstance(exc, TRANSIENT):
                cause = Cause.INFRASTRUCTURE
                message += f" (after {self.request.retries} retries; retried later)"
        log.error("%s (run %s)", message, run_id)
        try:
            ctx = context()
            record_stage_failure(ctx, image, self.stage, run_id, message, cause)
            lease.release(ctx.redis, lease_name(image, run_id, self.stage), task_id)
            run = ctx.state(image).runs.get(run_id)
            if run is not None and run.cause == Cause.DEFINITE and image in ctx.definitions:
                app.send_task(
                    CLEANUP_TASK, args=[image, run_id], argsrepr=sends.describe(image, run_id)
                )
        except Exception:  # the log is unreachable: the reconciler re-drives the run later
            log.exception("%s: could not record the failure of run %s", image, run_id)
