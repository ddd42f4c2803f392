"""Queue `build`: build the candidate image and push it as develop."""

from __future__ import annotations

from shared.stages.build import build as build_stage
from workers.app import app, context
from workers.base import StageTask, dispatch


@app.task(bind=True, base=StageTask, name="workers.build.build", stage="build")
def build(self: StageTask, image: str, run_id: str) -> str:
    """Build one run; hand it to the test stage when the candidate is pushed."""
    if build_stage(context(), image, run_id, self.request.id):
        dispatch("test", image, run_id)
        return "built"
    return "skipped"
