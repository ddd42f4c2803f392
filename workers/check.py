"""Queue `check`: compare upstream (PyPI, base image digest) with the log; start runs; resume
runs that stalled; audit the registry against the log."""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import FreshenError
from shared.stages.audit import audit_image
from shared.stages.check import check
from shared.stages.checkbatch import check_batch
from shared.stages.reconcile import reconcile as reconcile_runs
from workers.app import app, context
from workers.base import dispatch

log = logging.getLogger(__name__)


@app.task(bind=True, name="workers.check.check_image", acks_late=True, max_retries=0)
def check_image(self: Task, image: str) -> str | None:
    """Check one image; start a run (build first) when its inputs are new. Never retried:
    every problem is recorded and the next scheduled check tries again."""
    run_id = check(context(), image)
    if run_id:
        dispatch("build", image, run_id)
    return run_id


@app.task(bind=True, name="workers.check.check_images", acks_late=True, max_retries=0)
def check_images(self: Task, images: list[str]) -> dict[str, str]:
    """Check a batch of images (what beat sends); image → run started. Each image is checked
    on its own and a failure of one is recorded against it; never retried: the next scheduled
    check is the retry."""
    return check_batch(
        context(),
        images,
        on_started=lambda image, run_id: dispatch("build", image, run_id),
        fatal=(SoftTimeLimitExceeded,),
    )


@app.task(bind=True, name="workers.check.reconcile", acks_late=True, max_retries=0)
def reconcile(self: Task) -> list[str]:
    """Resume (or fail) runs stuck in a stage; the run ids acted on. Never retried: beat sends
    the next one soon."""
    return reconcile_runs(context(), dispatch)


@app.task(bind=True, name="workers.check.audit", acks_late=True, max_retries=0)
def audit(self: Task) -> dict[str, int]:
    """Audit every defined image's tags against the registry; image → tags drifting. Never
    retried: beat sends the next one."""
    ctx = context()
    drifting: dict[str, int] = {}
    for image in sorted(ctx.definitions):
        try:
            drifting[image] = len(audit_image(ctx, image).drift)
        except FreshenError as exc:  # one image's registry down must not stop the others
            log.warning("%s: audit failed: %s", image, exc)
    return drifting
