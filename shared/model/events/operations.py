"""Events of what watches over runs: reconciliation (a stalled run resumed, a failed one
retried), operators (promotions held and released, a rollback), the registry audit, and an
event or a log entry refused."""

from __future__ import annotations

from dataclasses import dataclass

from shared.model.events.stages import TagMove

# RunResumed reasons: a started stage whose attempt stopped without an outcome, or a stage that
# was due but never started (its message was never sent or was lost).
RESUMED_LOST = "lost"
RESUMED_NOT_STARTED = "not-started"


@dataclass(frozen=True)
class RunResumed:
    """Reconciliation handed `stage` of a stalled run on again (`reason`: lost or not-started).

    `attempt` is the attempt id re-sent (a lost attempt takes its own lease back), or "" when
    the stage had never started and a new attempt was sent.
    """

    run_id: str
    stage: str
    attempt: str
    reason: str


@dataclass(frozen=True)
class RunRetried:
    """Reconciliation retried a run that failed on infrastructure; it waits for `stage` again."""

    run_id: str
    stage: str
    retry: int


@dataclass(frozen=True)
class PromotionsHeld:
    """An operator stopped promotions of the image; tested runs wait until released."""

    by: str
    reason: str


@dataclass(frozen=True)
class PromotionsReleased:
    by: str
    reason: str


@dataclass(frozen=True)
class RolledBack:
    """An operator moved the moving tags back to an earlier tested run; the tag order counts
    from here: a run later than `run_id` moves them forward again."""

    run_id: str
    by: str
    reason: str
    moves: tuple[TagMove, ...]


@dataclass(frozen=True)
class TagFinding:
    """What the registry holds for a tag the log knows, against what the log says."""

    tag: str
    expected: str  # digest the log says ("" when the log only knows an in-flight move)
    found: str  # digest the registry answered ("" when the tag is missing)
    verdict: str  # shared.stages.audit.Verdict


@dataclass(frozen=True)
class AuditRecorded:
    """An audit of the registry found `findings` (only tags not in agreement), or drift ended."""

    findings: tuple[TagFinding, ...]


@dataclass(frozen=True)
class EventRefused:
    """An event that cannot happen in the run's state was refused instead of being recorded."""

    run_id: str
    event_type: str
    reason: str


@dataclass(frozen=True)
class LogUnreadable:
    """Folding the image's log failed at an entry this freshen cannot read."""

    error: str
