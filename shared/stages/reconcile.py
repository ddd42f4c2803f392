"""Reconcile: find runs that stopped moving without an outcome, and move them again.

A run can stall with no failure recorded: a whole worker was killed (its unacknowledged message
returns only after the broker's visibility timeout), a process died between recording a stage's
outcome and sending the next stage, or Redis lost a message in a crash. Beat sends a reconcile
task every `reconcile_interval_s`; it folds each image's state and, for every running run:

- a stage that is due but has not started (the run is `detected`, `built` or `tested`) for
  longer than the grace is sent again; a duplicate message is harmless, stages are idempotent;
- a started stage whose lease is free or older than the stage's hard time limit (so no attempt
  of it can still be alive) is re-sent under the same attempt id, which takes its own lease
  back; after `max_resumes` such resumes the stage is recorded as failed.

Each resume is a `RunResumed` event appended only if the run did not move since it was read, so
two reconcilers (two beats by mistake) resume a run once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import lease
from shared.config import Settings
from shared.context import Context
from shared.events import RESUMED_LOST, RESUMED_NOT_STARTED, RunResumed
from shared.projection import RunState
from shared.stages import lease_name, record_once, record_stage_failure

log = logging.getLogger(__name__)

# The stage a run waits for when it has recorded this stage and nothing after it.
NEXT_STAGE = {"detected": "build", "built": "test", "tested": "promote"}
# The stage an attempt is working on when the run is at this point.
STARTED_STAGE = {
    "building": "build",
    "testing": "test",
    "promoting": "promote",
    "promoted": "promote",
}
MAX_RESUMES = 3

# Sends a stage of a run: (stage, image, run id, attempt id or None for a new attempt).
Dispatch = Callable[[str, str, str, str | None], None]


@dataclass(frozen=True)
class Policy:
    """When a run counts as stalled."""

    time_limits: Mapping[str, int]  # stage → hard time limit (s)
    grace_s: float
    max_resumes: int = MAX_RESUMES

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        limits = {
            "build": settings.build_time_limit_s,
            "test": settings.test_time_limit_s,
            "promote": settings.promote_time_limit_s,
        }
        return cls(limits, grace_s=2 * settings.reconcile_interval_s)


@dataclass(frozen=True)
class Resume:
    stage: str
    attempt: str  # "" sends a new attempt
    reason: str


@dataclass(frozen=True)
class Fail:
    stage: str
    error: str


def idle_s(run: RunState, now: datetime) -> float:
    """Seconds since the run's last event."""
    return (now - datetime.fromisoformat(run.updated_at)).total_seconds()


def decide(
    image: str, run: RunState, now: datetime, policy: Policy, held: lease.LeaseView
) -> Resume | Fail | None:
    """What to do about one run; `held` is the lease of the stage it is in (if started)."""
    if run.status != "running":
        return None
    idle = idle_s(run, now)
    if run.stage in NEXT_STAGE:
        due = NEXT_STAGE[run.stage]
        return Resume(due, "", RESUMED_NOT_STARTED) if idle > policy.grace_s else None
    stage = STARTED_STAGE.get(run.stage)
    if stage is None or not held.stale:
        return None
    # Right after a resume, the re-sent attempt may wait in its queue: give it a time limit.
    just_resumed = run.resumed_at == run.updated_at
    wait = policy.grace_s + (policy.time_limits[stage] if just_resumed else 0)
    if idle <= wait:
        return None
    if run.resumes.get(stage, 0) >= policy.max_resumes:
        return Fail(
            stage,
            f"{image}: {stage} failed: run {run.run_id} stopped {policy.max_resumes + 1} times "
            "without an outcome (worker killed or out of memory?); see the worker logs, then "
            "rebuild",
        )
    return Resume(stage, run.attempts.get(stage, ""), RESUMED_LOST)


def reconcile(ctx: Context, dispatch: Dispatch, now: datetime | None = None) -> list[str]:
    """Resume or fail every stalled run of every defined image; the run ids acted on."""
    now = now or datetime.now(UTC)
    policy = Policy.of(ctx.settings)
    acted: list[str] = []
    for image in sorted(ctx.definitions):
        for run in list(ctx.state(image).runs.values()):
            if run.status != "running":
                continue
            stage = STARTED_STAGE.get(run.stage)
            held = lease.LeaseView(None, 0.0)
            if stage is not None:
                held = lease.inspect(ctx.redis, lease_name(image, run.run_id, stage))
            action = decide(image, run, now, policy, held)
            if action is not None and _act(ctx, image, run, action, dispatch):
                acted.append(run.run_id)
    return acted


def _act(
    ctx: Context, image: str, run: RunState, action: Resume | Fail, dispatch: Dispatch
) -> bool:
    if isinstance(action, Fail):
        log.error("%s", action.error)
        record_stage_failure(ctx, image, action.stage, run.run_id, action.error)
        return True
    seen = run.updated_at
    event = RunResumed(run.run_id, action.stage, action.attempt, action.reason)
    # Only if nothing happened to the run since it was read (another reconciler, a late worker).
    if not record_once(ctx, image, run.run_id, lambda r: r.updated_at != seen, event):
        return False
    log.warning(
        "%s: run %s: %s stage %s (%s); resuming it", image, run.run_id, run.stage, action.stage,
        action.reason,
    )  # fmt: skip
    dispatch(action.stage, image, run.run_id, action.attempt or None)
    return True
