"""Domain events: frozen, past tense, JSON with a type name and a schema version. Never pickle.

An event says what happened to one image; the envelope (`Recorded`) adds where it sits in that
image's stream and when it was written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError

SCHEMA_VERSION = 1
# RunResumed reasons: a started stage whose attempt stopped without an outcome, or a stage that
# was due but never started (its message was never sent or was lost).
RESUMED_LOST = "lost"
RESUMED_NOT_STARTED = "not-started"


@dataclass(frozen=True)
class StepRecord:
    """One command of an image test: its name, exit code and the tail of its output."""

    name: str
    exit_code: int
    output_tail: str


@dataclass(frozen=True)
class ReleaseDetected:
    """A (tool version, base digest) pair nobody has built yet; starts run `run_id`."""

    run_id: str
    tool_version: str
    base_image: str
    base_digest: str
    reason: str  # "check", "rebuild" or "forced"


@dataclass(frozen=True)
class CheckFailed:
    """Checking upstream failed; no run started. `error` names image, stage and next step."""

    error: str
    stage: str = "check"


@dataclass(frozen=True)
class CheckRecovered:
    """A check succeeded again after CheckFailed."""


@dataclass(frozen=True)
class BuildStarted:
    run_id: str
    attempt: str


@dataclass(frozen=True)
class BuildSucceeded:
    """The candidate was built and pushed as develop; `digest` is what the test stage tests."""

    run_id: str
    digest: str
    os_id: str
    os_version: str


@dataclass(frozen=True)
class BuildFailed:
    run_id: str
    error: str
    stage: str = "build"


@dataclass(frozen=True)
class TestStarted:
    __test__: ClassVar[bool] = False  # not a pytest class
    run_id: str
    attempt: str


@dataclass(frozen=True)
class TestsPassed:
    __test__: ClassVar[bool] = False
    run_id: str
    digest: str
    results: tuple[StepRecord, ...]


@dataclass(frozen=True)
class TestsFailed:
    __test__: ClassVar[bool] = False
    run_id: str
    digest: str
    failed_command: str
    output_tail: str
    results: tuple[StepRecord, ...] = ()
    stage: str = "test"


@dataclass(frozen=True)
class PromotionStarted:
    run_id: str
    attempt: str


@dataclass(frozen=True)
class Promoted:
    """Tags now point at the tested `digest`; `kept` tags stayed (they point at a newer version)."""

    run_id: str
    digest: str
    tool_version: str
    tags: tuple[str, ...]
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromotionFailed:
    run_id: str
    error: str
    stage: str = "promote"


@dataclass(frozen=True)
class VersionsCommitted:
    run_id: str
    commit: str
    tag: str


@dataclass(frozen=True)
class RunCompleted:
    run_id: str


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


Event = (
    ReleaseDetected
    | CheckFailed
    | CheckRecovered
    | BuildStarted
    | BuildSucceeded
    | BuildFailed
    | TestStarted
    | TestsPassed
    | TestsFailed
    | PromotionStarted
    | Promoted
    | PromotionFailed
    | VersionsCommitted
    | RunCompleted
    | RunResumed
)
EVENT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in Event.__args__}
_ADAPTERS: dict[str, TypeAdapter[Any]] = {n: TypeAdapter(c) for n, c in EVENT_TYPES.items()}


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


def encode(image: str, position: int, at: str, event: Event) -> str:
    """The JSON stored in the streams."""
    return json.dumps(
        {
            "type": type(event).__name__,
            "schema": SCHEMA_VERSION,
            "image": image,
            "position": position,
            "at": at,
            "data": asdict(event),
        },
        separators=(",", ":"),
    )


class UnknownEvent(ValueError):
    """A stored entry that this version of freshen cannot read."""


def decode(raw: str | bytes, stream_id: str = "") -> Recorded:
    """Parse one stored event; raise UnknownEvent for anything not written by this schema."""
    try:
        doc = json.loads(raw)
        adapter = _ADAPTERS[doc["type"]]
        if doc["schema"] != SCHEMA_VERSION:
            raise UnknownEvent(f"event schema {doc['schema']} is not {SCHEMA_VERSION}")
        event = adapter.validate_python(doc["data"])
        return Recorded(doc["image"], int(doc["position"]), doc["at"], event, stream_id)
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        if isinstance(exc, UnknownEvent):
            raise
        raise UnknownEvent(f"unreadable event {stream_id}: {type(exc).__name__}") from None
