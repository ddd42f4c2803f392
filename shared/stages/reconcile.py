"""Reconcile: find runs that stopped moving without an outcome, and move them again.

A run can stall with no outcome recorded: a whole worker was killed (its unacknowledged message
returns only after the broker's visibility timeout), a process died between recording a stage's
outcome and sending the next stage, or Redis lost a message in a crash. Beat sends a reconcile
task every `reconcile_interval_s`; it folds each image's state and, for every run:

- a stage that is due but has not started is sent again only if no attempt of it is queued
  (shared/sends.py), after the grace, with a wait that doubles per re-send, at most
  `max_sends` times;
- a started stage whose lease has lapsed (its holder stopped renewing it: killed) is re-sent
  under the same attempt id, which takes its own lease back; after `max_resumes` such resumes
  the stage fails on infrastructure;
- a run that failed on infrastructure (retries exhausted, worker lost) is retried with
  backoff, at most `infra_retries` times; a run whose tests failed stays failed.

Each action is an event appended only if the run did not move since it was read, so two
reconcilers (two beats by mistake) act once. An image whose log cannot be folded gets one
LogUnreadable event and the other images go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import sends
from shared.adapters import lease
from shared.config import Settings
from shared.constants import KEY_PREFIX
from shared.context import Context
from shared.model.events import (
    RESUMED_LOST,
    RESUMED_NOT_STARTED,
    LogUnreadable,
    RunResumed,
    RunRetried,
)
from shared.model.pipeline import Cause, Stage, Status, due_stage, working_stage
from shared.model.projection import ImageState, RunState
from shared.stages import lease_name, record_stage_failure

log = logging.getLogger(__name__)

MAX_RESUMES = 3
MAX_SENDS = 4
# The last LogUnreadable error recorded per image, so a broken log gets one event, not one a cycle.
_UNREADABLE_KEY = f"{KEY_PREFIX}:unreadable:"

# Sends a stage of a run: (stage, image, run id, attempt id or None for the next attempt).
Dispatch = Callable[[str, str, str, str | None], object]
# Where a sent attempt is: "queued", "started" or None (shared/sends.py).
SentState = Callable[[str], str | None]


@dataclass(frozen=True)
class Policy:
    """When a run counts as stalled, and how often it is tried again."""

    grace_s: float
    max_resumes: int = MAX_RESUMES
    max_sends: int = MAX_SENDS
    infra_retries: int = 3
    infra_backoff_s: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            grace_s=2 * settings.reconcile_interval_s,
            infra_retries=settings.infra_retries,
            infra_backoff_s=settings.infra_retry_backoff_s,
        )


@dataclass(frozen=True)
class Resume:
    stage: str
    attempt: str  # "" sends the next attempt
    reason: str


@dataclass(frozen=True)
class Retry:
    stage: str
    retry: int


@dataclass(frozen=True)
class Fail:
    stage: str
    error: str


Action = Resume | Retry | Fail


def idle_s(run: RunState, now: datetime) -> float:
    """Seconds since the run's last event."""
    return (now - datetime.fromisoformat(run.updated_at)).total_seconds()


def _lost(image: str, run: RunState, stage: str, what: str) -> Fail:
    return Fail(
        stage,
        f"{image}: {stage} failed: run {run.run_id} {what} (worker killed, out of memory or "
        "broker lost?); see the worker logs; it is retried on infrastructure",
    )


def _due(
    image: str, run: RunState, stage: Stage, idle: float, policy: Policy, sent: SentState
) -> Resume | Fail | None:
    attempt = sends.attempt_id(run.run_id, stage, run.retries, run.sends.get(stage, 0))
    if sent(attempt) in (sends.QUEUED, sends.STARTED):
        # Waiting in its queue, or in a worker's hands before its first event (a promote
        # waiting for the image's lease marks itself queued again; between the two marks it is
        # started): sending it again would duplicate it. A worker that dies holding it gives
        # the message back to the broker (acks late, rejected on worker loss).
        return None
    times = run.sends.get(stage, 0)
    if idle <= policy.grace_s * 2**times:
        return None
    if times >= policy.max_sends:
        return _lost(image, run, stage, f"was sent {times + 1} times and never started")
    return Resume(stage, "", RESUMED_NOT_STARTED)


def decide(
    image: str,
    run: RunState,
    now: datetime,
    policy: Policy,
    held: lease.LeaseView,
    sent: SentState = lambda _: None,
    promotions_held: bool = False,
) -> Action | None:
    """What to do about one run; `held` is the lease of the stage it works in (if any)."""
    idle = idle_s(run, now)
    if run.status == Status.FAILED:
        backoff = policy.infra_backoff_s * 2**run.retries
        if run.cause != Cause.INFRASTRUCTURE or run.retries >= policy.infra_retries:
            return None
        return Retry(run.failed_stage, run.retries + 1) if idle > backoff else None
    if run.status != Status.RUNNING:
        return None
    stage = due_stage(run.stage)
    if stage is not None:
        if stage == Stage.PROMOTE and promotions_held:
            return None
        return _due(image, run, stage, idle, policy, sent)
    stage = working_stage(run.stage)
    attempt = run.attempts.get(stage or "", "")
    if stage is None or not held.stale or sent(attempt) == sends.QUEUED:
        return None  # alive, or its resumed attempt waits in the queue
    if run.resumes.get(stage, 0) >= policy.max_resumes:
        return _lost(
            image, run, stage, f"stopped {policy.max_resumes + 1} times without an outcome"
        )
    return Resume(stage, attempt, RESUMED_LOST)


def reconcile(ctx: Context, dispatch: Dispatch, now: datetime | None = None) -> list[str]:
    """Resume, retry or fail every stalled run of every defined image; the run ids acted on."""
    now = now or datetime.now(UTC)
    policy = Policy.of(ctx.settings)
    acted: list[str] = []
    for image in sorted(ctx.definitions):
        try:
            state = ctx.state(image)
        except Exception as exc:  # one unreadable log must not stop the others
            _record_unreadable(ctx, image, exc)
            continue
        acted += _reconcile_image(ctx, state, dispatch, now, policy)
    return acted


def _reconcile_image(
    ctx: Context, state: ImageState, dispatch: Dispatch, now: datetime, policy: Policy
) -> list[str]:
    acted: list[str] = []
    for run in list(state.runs.values()):
        if run.status == Status.DONE:
            continue
        stage = working_stage(run.stage)
        held = lease.LeaseView(None, 0.0)
        if stage is not None and run.status == Status.RUNNING:
            held = lease.inspect(ctx.redis, lease_name(state.name, run.run_id, stage))
        action = decide(
            state.name, run, now, policy, held,
            lambda task_id: sends.state(ctx.redis, task_id), bool(state.held),
        )  # fmt: skip
        if action is not None and _act(ctx, state.name, run, action, dispatch):
            acted.append(run.run_id)
    return acted


def _record_unreadable(ctx: Context, image: str, exc: Exception) -> None:
    error = f"{image}: reconcile failed: the event log cannot be folded ({exc}); other images go on"
    log.error("%s", error)
    if ctx.redis.getset(_UNREADABLE_KEY + image, error) == error.encode():
        return
    ctx.store.append(image, [LogUnreadable(error)], ctx.store.length(image))


def _act(ctx: Context, image: str, run: RunState, action: Action, dispatch: Dispatch) -> bool:
    if isinstance(action, Fail):
        log.error("%s", action.error)
        cause = Cause.INFRASTRUCTURE
        record_stage_failure(ctx, image, action.stage, run.run_id, action.error, cause)
        return True
    seen = run.updated_at
    event: RunResumed | RunRetried
    if isinstance(action, Retry):
        event = RunRetried(run.run_id, action.stage, action.retry)
    else:
        event = RunResumed(run.run_id, action.stage, action.attempt, action.reason)

    # Only if nothing happened to the run since it was read (another reconciler, a late worker).
    def unchanged(state: ImageState) -> list[RunResumed | RunRetried]:
        current = state.runs.get(run.run_id)
        return [event] if current is not None and current.updated_at == seen else []

    if not ctx.record(image, unchanged)[1]:
        return False
    log.warning("%s: run %s: %s; sending %s again", image, run.run_id, action, action.stage)
    attempt = action.attempt if isinstance(action, Resume) else ""
    dispatch(action.stage, image, run.run_id, attempt or None)
    return True
