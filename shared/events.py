"""Domain events: frozen, past tense, JSON with a type name and a schema version. Never pickle.

An event says what happened to one image; the envelope (`Recorded`) adds where it sits in that
image's stream and when it was written. Each event type has a version (`VERSION`); how events
are stored, and how older versions are upcast when read, is shared/eventcodec.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

from shared.pipeline import Cause

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
class ReleaseWaiting:
    """`tool_version`, newer than anything the check may build, is younger than the image's
    min_release_age: the check builds it from `until` (UTC) on, unless it is yanked before."""

    tool_version: str
    uploaded_at: str
    until: str


@dataclass(frozen=True)
class ReleaseWaitEnded:
    """The waiting `tool_version` no longer shows as waiting: `reason` is "old enough" (built
    now), "withdrawn" (yanked or gone from the index: never built) or "superseded" (a newer
    release was built by force; this one is still built once old enough, like any release)."""

    tool_version: str
    reason: str


@dataclass(frozen=True)
class CheckFailed:
    """Checking upstream failed; no run started. `error` names image, stage and next step."""

    error: str
    stage: str = "check"


@dataclass(frozen=True)
class CheckRecovered:
    """A check succeeded again after CheckFailed."""


@dataclass(frozen=True)
class DefinitionInvalid:
    """The image's definition folder is broken: `file` and `field` ("" when no one field is to
    blame, e.g. a TOML syntax error); `error` says what to fix. The image is not checked until
    its folder is fixed; other images go on. Recorded once per distinct error."""

    file: str
    field: str
    error: str


@dataclass(frozen=True)
class DefinitionRepaired:
    """The image's definition loads again after DefinitionInvalid; checks resume."""


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
    """Version 2 added `cause` (version 1 failures read as definite)."""

    VERSION: ClassVar[int] = 2
    run_id: str
    error: str
    cause: Cause = Cause.DEFINITE
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
    cause: Cause = Cause.DEFINITE  # version 2: a test stage lost to infrastructure, not a test
    VERSION: ClassVar[int] = 2


@dataclass(frozen=True)
class VulnerabilityFinding:
    """A published vulnerability of a distribution installed in the candidate (PyPI's JSON API
    `vulnerabilities`); `ignored` holds the image.toml reason when the image ignores its id."""

    id: str  # e.g. PYSEC-2018-28 or GHSA-x84v-xcm2-53pg
    package: str  # the distribution's name as installed
    installed: str  # its installed version
    fixed_in: tuple[str, ...]  # versions that fix it (may be empty: no fix yet)
    aliases: tuple[str, ...] = ()  # e.g. CVE ids
    link: str = ""
    summary: str = ""
    ignored: str = ""


@dataclass(frozen=True)
class VulnerabilitiesChecked:
    """The distributions installed in the run's candidate were looked up in the vulnerability
    data before promotion. `findings` are those that apply (ignored ones carry their reason);
    `policy` is the image's (block, warn); `blocked` says the run stops here; `no_data` lists
    the packages the index knows nothing about; `unreadable` says why the data could not be
    read (then a `block` policy fails closed)."""

    run_id: str
    digest: str
    tool_version: str
    policy: str
    packages: int  # distributions found in the image
    findings: tuple[VulnerabilityFinding, ...]
    no_data: tuple[str, ...] = ()
    blocked: bool = False
    unreadable: str = ""
    summary: str = ""


@dataclass(frozen=True)
class PromotionStarted:
    run_id: str
    attempt: str


@dataclass(frozen=True)
class TagMove:
    """One tag of a promotion plan: where it pointed when planned and where it goes."""

    tag: str
    from_digest: str  # "" when the tag did not exist
    to_digest: str


@dataclass(frozen=True)
class PromotionPlanned:
    """Written before the first manifest PUT: a resumed promotion rolls this plan forward."""

    run_id: str
    attempt: str
    moves: tuple[TagMove, ...]
    keep: tuple[str, ...]


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
    """Version 2 added `cause` (version 1 failures read as definite)."""

    VERSION: ClassVar[int] = 2
    run_id: str
    error: str
    cause: Cause = Cause.DEFINITE
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
    verdict: str  # shared.audit.Verdict


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
