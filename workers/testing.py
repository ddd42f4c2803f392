"""Queue `test`: run the image's test script inside the built candidate."""

from __future__ import annotations

from shared.stages.verify import verify as verify_stage
from workers.app import app, context
from workers.base import StageTask, dispatch


@app.task(bind=True, base=StageTask, name="workers.testing.verify", stage="test")
def verify(self: StageTask, image: str, run_id: str) -> str:
    """Test one run's digest; hand it to promote when every command passed."""
    if verify_stage(context(), image, run_id, self.request.id):
        dispatch("promote", image, run_id)
        return "passed"
    return "skipped"
