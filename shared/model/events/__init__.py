"""Domain events: frozen, past tense, JSON with a type name and a schema version. Never pickle.

An event says what happened to one image; the envelope (`Recorded`) adds where it sits in that
image's stream and when it was written. Each event type has a version (`VERSION`); how events
are stored, and how older versions are upcast when read, is shared/model/eventcodec.py.

The event types sit by what a reader looks for: before a run (detection.py), a run's stages
(stages.py), what watches over runs (operations.py); this module is their union (`Event`) and
the envelope. Import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.model.events.detection import (
    CheckFailed,
    CheckRecovered,
    DefinitionInvalid,
    DefinitionRepaired,
    ReleaseDetected,
    ReleaseWaitEnded,
    ReleaseWaiting,
)
from shared.model.events.operations import (
    RESUMED_LOST,
    RESUMED_NOT_STARTED,
    AuditRecorded,
    EventRefused,
    LogUnreadable,
    PromotionsHeld,
    PromotionsReleased,
    RolledBack,
    RunResumed,
    RunRetried,
    TagFinding,
)
from shared.model.events.stages import (
    BuildFailed,
    BuildStarted,
    BuildSucceeded,
    Promoted,
    PromotionFailed,
    PromotionPlanned,
    PromotionStarted,
    RunCompleted,
    StepRecord,
    TagMove,
    TestsFailed,
    TestsPassed,
    TestStarted,
    VersionsCommitted,
    VulnerabilitiesChecked,
    VulnerabilityFinding,
)

__all__ = [
    "RESUMED_LOST",
    "RESUMED_NOT_STARTED",
    "AuditRecorded",
    "BuildFailed",
    "BuildStarted",
    "BuildSucceeded",
    "CheckFailed",
    "CheckRecovered",
    "DefinitionInvalid",
    "DefinitionRepaired",
    "Event",
    "EventRefused",
    "LogUnreadable",
    "Promoted",
    "PromotionFailed",
    "PromotionPlanned",
    "PromotionStarted",
    "PromotionsHeld",
    "PromotionsReleased",
    "Recorded",
    "ReleaseDetected",
    "ReleaseWaitEnded",
    "ReleaseWaiting",
    "RolledBack",
    "RunCompleted",
    "RunResumed",
    "RunRetried",
    "StepRecord",
    "TagFinding",
    "TagMove",
    "TestStarted",
    "TestsFailed",
    "TestsPassed",
    "VersionsCommitted",
    "VulnerabilitiesChecked",
    "VulnerabilityFinding",
    "now",
]

Event = (
    ReleaseDetected
    | CheckFailed
    | CheckRecovered
    | DefinitionInvalid
    | DefinitionRepaired
    | BuildStarted
    | BuildSucceeded
    | BuildFailed
    | TestStarted
    | TestsPassed
    | TestsFailed
    | VulnerabilitiesChecked
    | PromotionStarted
    | Promoted
    | PromotionFailed
    | VersionsCommitted
    | RunCompleted
    | RunResumed
    | PromotionPlanned
    | RunRetried
    | PromotionsHeld
    | PromotionsReleased
    | RolledBack
    | AuditRecorded
    | ReleaseWaiting
    | ReleaseWaitEnded
    | EventRefused
    | LogUnreadable
)


@dataclass(frozen=True)
class Recorded:
    """An event as stored: image, 0-based position in the image's stream, UTC time."""

    image: str
    position: int
    at: str
    event: Event
    stream_id: str = field(default="", compare=False)

    @property
    def type(self) -> str:
        return type(self.event).__name__


def now() -> str:
    """UTC time in ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
