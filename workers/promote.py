"""Queue `promote`: move the release tags to the tested digest, commit the versions file."""

from __future__ import annotations

from shared.stages.promote import BUSY_RETRY_S, PromoteBusy
from shared.stages.promote import promote as promote_stage
from workers.app import app, context
from workers.base import StageTask

# A promote waiting for another promote of the same image retries this often, this many times.
BUSY_RETRIES = 120


@app.task(bind=True, base=StageTask, name="workers.promote.promote", stage="promote")
def promote(self: StageTask, image: str, run_id: str) -> str:
    """Promote one tested run (one promote per image at a time)."""
    try:
        done = promote_stage(context(), image, run_id, self.request.id)
    except PromoteBusy as exc:
        raise self.retry(exc=exc, countdown=BUSY_RETRY_S, max_retries=BUSY_RETRIES) from None
    return "promoted" if done else "skipped"
