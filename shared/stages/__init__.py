"""The pipeline's stages as plain functions: check, build, verify (test), promote.

Each stage re-reads the run from the event log, does nothing when its outcome is already
recorded, and records its outcome with an expected-position append. Celery tasks only call these.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.context import Context
from shared.errors import StageError
from shared.model.events import BuildFailed, Event, PromotionFailed, TestsFailed
from shared.model.pipeline import Cause, Stage, Status
from shared.model.projection import ImageState, RunState


def lease_name(image: str, run_id: str, stage: str) -> str:
    """The lease a stage attempt holds: per run for build and test, per image for promote
    (one promote of an image at a time keeps tags moving forward only)."""
    return f"{image}:{stage}" if stage == Stage.PROMOTE else f"{image}:{run_id}:{stage}"


def find_run(state: ImageState, run_id: str, stage: str) -> RunState:
    """The run, or a StageError saying it is unknown (a task for a run never detected)."""
    run = state.runs.get(run_id)
    if run is None:
        raise StageError(state.name, stage, f"run {run_id} is not in the event log; nothing to do")
    return run


def record_once(
    ctx: Context, image: str, run_id: str, unless: Callable[[RunState], bool], event: Event
) -> bool:
    """Append `event` unless the run is failed or `unless(run)` holds; True if appended."""

    def decide(state: ImageState) -> list[Event]:
        run = state.runs.get(run_id)
        if run is None or run.status == Status.FAILED or unless(run):
            return []
        return [event]

    return bool(ctx.record(image, decide)[1])


def record_failure(ctx: Context, image: str, run_id: str, event: Event) -> None:
    """Record a failure event once; a run already finished or failed keeps its outcome."""
    record_once(ctx, image, run_id, lambda run: run.status != Status.RUNNING, event)


def record_attempt(ctx: Context, image: str, run_id: str, stage: str, event: Event) -> None:
    """Record that `attempt` started `stage` (a redelivered attempt records nothing new)."""
    attempt = getattr(event, "attempt", "")
    record_once(ctx, image, run_id, lambda run: run.attempts.get(stage) == attempt, event)


def record_stage_failure(
    ctx: Context, image: str, stage: str, run_id: str, error: str, cause: Cause = Cause.DEFINITE
) -> None:
    """Record that `stage` of a run failed (no-op if the run already has an outcome); failures
    on infrastructure are retried later by reconciliation."""
    event: Event
    if stage == Stage.BUILD:
        event = BuildFailed(run_id, error, cause)
    elif stage == Stage.TEST:
        event = TestsFailed(run_id, "", "(test stage)", error[-2000:], cause=cause)
    else:
        event = PromotionFailed(run_id, error, cause)
    record_failure(ctx, image, run_id, event)
