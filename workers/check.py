"""Queue `check`: compare upstream (PyPI, base image digest) with the log; start runs; resume
runs that stalled."""

from __future__ import annotations

from celery import Task

from shared.stages.check import check
from shared.stages.reconcile import reconcile as reconcile_runs
from workers.app import app, context
from workers.base import dispatch


@app.task(bind=True, name="workers.check.check_image", acks_late=True, max_retries=0)
def check_image(self: Task, image: str) -> str | None:
    """Check one image; start a run (build first) when its inputs are new. Never retried:
    every problem is recorded and the next scheduled check tries again."""
    run_id = check(context(), image)
    if run_id:
        dispatch("build", image, run_id)
    return run_id


@app.task(bind=True, name="workers.check.reconcile", acks_late=True, max_retries=0)
def reconcile(self: Task) -> list[str]:
    """Resume (or fail) runs stuck in a stage; the run ids acted on. Never retried: beat sends
    the next one soon."""
    return reconcile_runs(context(), dispatch)
