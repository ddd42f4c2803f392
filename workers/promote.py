"""Queue `promote`: move the release tags to the tested digest, commit the versions file."""

from __future__ import annotations

from celery import Task

from shared.stages.build import cleanup_candidate
from shared.stages.promote import BUSY_RETRY_S, PromoteBusy
from shared.stages.promote import promote as promote_stage
from workers.app import app, context
from workers.base import CLEANUP_TASK, StageTask


@app.task(bind=True, base=StageTask, name="workers.promote.promote", stage="promote")
def promote(self: StageTask, image: str, run_id: str) -> str:
    """Promote one tested run (one promote per image at a time). Waiting for another promote
    re-sends this attempt later and spends none of its transient-error retries."""
    try:
        return promote_stage(context(), image, run_id, self.request.id)
    except PromoteBusy:
        self.wait_and_resend(BUSY_RETRY_S)
        raise  # not reached: wait_and_resend raises Ignore


@app.task(bind=True, name=CLEANUP_TASK, acks_late=True, max_retries=0)
def cleanup(self: Task, image: str, run_id: str) -> None:
    """Remove the candidate tag of a run that failed for good (sent by the failed stage's
    worker, which may hold no registry credentials). Best effort and idempotent: never
    retried, a candidate left behind is only storage."""
    ctx = context()
    run = ctx.state(image).runs.get(run_id)
    if run is not None and image in ctx.definitions:
        cleanup_candidate(ctx, ctx.definition(image), run)
