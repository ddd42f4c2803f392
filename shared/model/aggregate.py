"""The image aggregate: runs, tags and operator state folded from events, with the rule that
allows each event kept beside its effect. An event that cannot happen in the current state
raises InvalidTransition (Context.record refuses it with an EventRefused instead of appending).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from packaging.version import Version

from shared.model import events as ev
from shared.model.pipeline import Cause, Phase, Stage, Status, spec


class InvalidTransition(ValueError):
    """An event that cannot happen in the state it would apply to."""


@dataclass
class RunState:
    """One run: inputs, the phase it reached and what each stage recorded."""

    run_id: str
    tool_version: str
    base_image: str
    base_digest: str
    reason: str
    detected_at: str
    seq: int = 0  # position of its ReleaseDetected: the run order among equal versions
    stage: Phase = Phase.DETECTED
    status: Status = Status.RUNNING
    updated_at: str = ""
    digest: str = ""
    os_id: str = ""
    os_version: str = ""
    error: str = ""
    cause: Cause = Cause.DEFINITE
    failed_stage: str = ""
    failed_command: str = ""
    results: list[ev.StepRecord] = field(default_factory=list)
    plan: list[ev.TagMove] = field(default_factory=list)  # recorded before the first PUT
    tags: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    commit: str = ""
    git_tag: str = ""
    attempts: dict[str, str] = field(default_factory=dict)  # stage → task attempt id
    resumes: dict[str, int] = field(default_factory=dict)  # stage → lost attempts resumed
    sends: dict[str, int] = field(default_factory=dict)  # stage → not-started re-sends
    retries: int = 0  # infrastructure failures retried
    resumed_at: str = ""  # time of the last RunResumed or RunRetried
    vulnerabilities: ev.VulnerabilitiesChecked | None = None  # the candidate's, before promotion

    def reached(self, phase: Phase | str) -> bool:
        return self.stage.rank >= Phase(phase).rank

    @property
    def passed_tests(self) -> bool:
        """The run's digest passed its tests (whatever happened after)."""
        return bool(self.digest) and self.reached(Phase.TESTED) and self.failed_stage != "test"

    @property
    def order(self) -> tuple[Version, int]:
        """Runs are ordered by tool version, then by when their inputs were detected."""
        return order_key(self.tool_version, self.seq)


def order_key(tool_version: str, seq: int) -> tuple[Version, int]:
    return Version(tool_version), seq


@dataclass
class TagState:
    """What a tag points at, and which run put it there."""

    digest: str
    tool_version: str
    run_id: str


@dataclass
class Waiting:
    """A release too young to build (min_release_age), buildable from `until`."""

    tool_version: str
    uploaded_at: str
    until: str


@dataclass
class ImageState:
    """Everything known about one image; `position` is how many events were folded."""

    name: str
    position: int = 0
    last_stream_id: str = "-"
    runs: dict[str, RunState] = field(default_factory=dict)
    tags: dict[str, TagState] = field(default_factory=dict)
    check_error: str = ""
    definition_error: str = ""  # the image's folder is broken (DefinitionInvalid) until fixed
    held: str = ""  # "by: reason" while promotions are held
    drift: list[ev.TagFinding] = field(default_factory=list)  # the last audit's findings
    refused: int = 0  # events in the log that the rules refused when folding
    waiting: Waiting | None = None  # the newest release, while younger than min_release_age

    def run_for(self, tool_version: str, base_digest: str) -> RunState | None:
        """The most recent run of these inputs, if any."""
        inputs = (tool_version, base_digest)
        found = [r for r in self.runs.values() if (r.tool_version, r.base_digest) == inputs]
        return found[-1] if found else None

    def tested_run_with(self, digest: str) -> RunState | None:
        """The latest run (in order) whose `digest` passed its tests."""
        found = [r for r in self.runs.values() if r.digest == digest and r.passed_tests]
        return max(found, key=lambda r: r.order) if found else None

    def holder(self, tag: str) -> RunState | None:
        """The run the log says `tag` points at."""
        pointed = self.tags.get(tag)
        return self.runs.get(pointed.run_id) if pointed else None


# Each run event: the phases it may happen in (None: any) and the status it needs.
_RUNNING = (Status.RUNNING,)
_Rule = tuple[tuple[Phase, ...] | None, tuple[Status, ...]]
_RULES: dict[type, _Rule] = {
    ev.BuildStarted: ((Phase.DETECTED, Phase.BUILDING), _RUNNING),
    ev.BuildSucceeded: ((Phase.BUILDING,), _RUNNING),
    ev.TestStarted: ((Phase.BUILT, Phase.TESTING), _RUNNING),
    ev.TestsPassed: ((Phase.TESTING,), _RUNNING),
    ev.VulnerabilitiesChecked: ((Phase.TESTING,), _RUNNING),
    ev.PromotionStarted: ((Phase.TESTED, Phase.PROMOTING), _RUNNING),
    ev.PromotionPlanned: ((Phase.PROMOTING,), _RUNNING),
    ev.Promoted: ((Phase.PROMOTING,), _RUNNING),
    ev.VersionsCommitted: ((Phase.PROMOTED, Phase.DONE), (Status.RUNNING, Status.DONE)),
    ev.RunCompleted: ((Phase.PROMOTED,), _RUNNING),
    ev.BuildFailed: (None, _RUNNING),
    ev.TestsFailed: (None, _RUNNING),
    ev.PromotionFailed: (None, _RUNNING),
    ev.RunResumed: (None, _RUNNING),
    ev.RunRetried: (None, (Status.FAILED,)),
}


def check_allowed(state: ImageState, event: ev.Event) -> None:
    """Raise InvalidTransition when `event` cannot happen in `state`."""
    rule = _RULES.get(type(event))
    if rule is not None:  # most events belong to a run: looked up first, the fold's hot path
        _check_run_event(state, event, rule)
    elif isinstance(event, ev.ReleaseDetected):
        if event.run_id in state.runs:
            raise InvalidTransition(f"run {event.run_id} was already detected")
    elif isinstance(event, ev.RolledBack):
        target = state.runs.get(event.run_id)
        if target is None or not target.passed_tests:
            raise InvalidTransition(f"run {event.run_id} never passed its tests")
    elif isinstance(event, ev.PromotionsHeld | ev.PromotionsReleased):
        if bool(state.held) == isinstance(event, ev.PromotionsHeld):
            raise InvalidTransition("promotions are already " + ("held" if state.held else "on"))
    elif isinstance(event, ev.ReleaseWaiting | ev.ReleaseWaitEnded):
        _check_wait(state, event)


def _check_run_event(state: ImageState, event: ev.Event, rule: _Rule) -> None:
    run = state.runs.get(getattr(event, "run_id", ""))
    if run is None:
        raise InvalidTransition(f"run {getattr(event, 'run_id', '')} is not in the log")
    phases, statuses = rule
    if run.status not in statuses or (phases is not None and run.stage not in phases):
        raise InvalidTransition(
            f"{type(event).__name__} cannot follow run {run.run_id} at {run.stage}/{run.status}"
        )
    if isinstance(event, ev.RunRetried) and run.cause != Cause.INFRASTRUCTURE:
        raise InvalidTransition(f"run {run.run_id} failed on its own outcome; not retried")


def _check_wait(state: ImageState, event: ev.ReleaseWaiting | ev.ReleaseWaitEnded) -> None:
    """A release waits once per (version, until), and only while no run builds it; only the
    waiting release can stop waiting."""
    waiting = state.waiting
    if isinstance(event, ev.ReleaseWaitEnded):
        if waiting is None or waiting.tool_version != event.tool_version:
            raise InvalidTransition(f"release {event.tool_version} is not waiting")
        return
    wanted = (event.tool_version, event.until)
    if waiting is not None and (waiting.tool_version, waiting.until) == wanted:
        raise InvalidTransition(f"release {event.tool_version} already waits until {event.until}")
    if any(r.tool_version == event.tool_version for r in state.runs.values()):
        raise InvalidTransition(f"release {event.tool_version} already has a run")


def _fail(run: RunState, stage: Stage, error: str, cause: Cause) -> None:
    run.status, run.error, run.cause, run.failed_stage = Status.FAILED, error, cause, stage.value


def _run_event(run: RunState, event: ev.Event, at: str) -> None:
    """Apply an event that belongs to a run (already allowed)."""
    run.updated_at = at
    match event:
        case ev.BuildStarted(attempt=attempt):
            run.stage, run.attempts["build"] = Phase.BUILDING, attempt
        case ev.BuildSucceeded(digest=digest, os_id=os_id, os_version=os_version):
            run.stage, run.digest = Phase.BUILT, digest
            run.os_id, run.os_version = os_id, os_version
        case ev.TestStarted(attempt=attempt):
            run.stage, run.attempts["test"] = Phase.TESTING, attempt
        case ev.TestsPassed(results=results):
            run.stage, run.results = Phase.TESTED, list(results)
        case ev.VulnerabilitiesChecked():
            run.vulnerabilities = event
        case ev.TestsFailed(failed_command=command, output_tail=tail, results=results):
            run.failed_command, run.results = command, list(results)
            error = f"test command {command!r} failed: {tail[-500:]}"
            _fail(run, Stage.TEST, error, event.cause)
        case ev.BuildFailed(error=error, cause=cause):
            _fail(run, Stage.BUILD, error, cause)
        case ev.PromotionFailed(error=error, cause=cause):
            _fail(run, Stage.PROMOTE, error, cause)
        case ev.PromotionStarted(attempt=attempt):
            run.stage, run.attempts["promote"] = Phase.PROMOTING, attempt
        case ev.PromotionPlanned(moves=moves):
            run.plan = list(moves)
        case ev.Promoted(tags=tags, kept=kept):
            run.stage, run.tags, run.kept = Phase.PROMOTED, list(tags), list(kept)
        case ev.VersionsCommitted(commit=commit, tag=tag):
            run.commit, run.git_tag = commit, tag
        case ev.RunCompleted():
            run.stage, run.status = Phase.DONE, Status.DONE
        case ev.RunResumed(stage=stage, reason=reason):
            run.resumed_at = at
            counter = run.resumes if reason == ev.RESUMED_LOST else run.sends
            counter[stage] = counter.get(stage, 0) + 1
        case ev.RunRetried(stage=stage, retry=retry):
            run.status, run.error, run.failed_stage, run.retries = Status.RUNNING, "", "", retry
            run.resumed_at, run.resumes, run.sends, run.plan = at, {}, {}, []
            waits_in = spec(stage).waits_in or Phase.DETECTED
            run.stage = min(run.stage, waits_in, key=lambda p: p.rank)


def _image_event(state: ImageState, event: ev.Event, at: str, position: int) -> None:
    match event:
        case ev.ReleaseDetected():
            state.runs[event.run_id] = RunState(
                event.run_id, event.tool_version, event.base_image, event.base_digest,
                event.reason, detected_at=at, seq=position, updated_at=at,
            )  # fmt: skip
            if state.waiting and state.waiting.tool_version == event.tool_version:
                state.waiting = None  # built before its time (a forced rebuild)
        case ev.ReleaseWaiting(tool_version=version, uploaded_at=uploaded, until=until):
            state.waiting = Waiting(version, uploaded, until)
        case ev.ReleaseWaitEnded():
            state.waiting = None
        case ev.CheckFailed(error=error):
            state.check_error = error
        case ev.CheckRecovered():
            state.check_error = ""
        case ev.DefinitionInvalid(error=error):
            state.definition_error = error
        case ev.DefinitionRepaired():
            state.definition_error = ""
        case ev.PromotionsHeld(by=by, reason=reason):
            state.held = f"{by}: {reason}"
        case ev.PromotionsReleased():
            state.held = ""
        case ev.AuditRecorded(findings=findings):
            state.drift = list(findings)
        case ev.Promoted(tags=tags, digest=digest, tool_version=version, run_id=run_id):
            for tag in tags:
                state.tags[tag] = TagState(digest, version, run_id)
        case ev.RolledBack(run_id=run_id, moves=moves):
            target = state.runs[run_id]
            for move in moves:
                state.tags[move.tag] = TagState(move.to_digest, target.tool_version, run_id)


def apply(state: ImageState, record: ev.Recorded) -> None:
    """Fold one event into the image's state (in place); a refused event changes nothing but
    the count of refusals, the same way in the live projection and in a replay."""
    event = record.event
    state.position = record.position + 1
    state.last_stream_id = record.stream_id or state.last_stream_id
    try:
        check_allowed(state, event)
    except InvalidTransition:
        state.refused += 1
        return
    if type(event) in _RULES:  # allowed, so its run is in the log
        _run_event(state.runs[event.run_id], event, record.at)  # type: ignore[union-attr]
        if not isinstance(event, ev.Promoted):  # the one run event that also moves tags
            return
    _image_event(state, event, record.at, record.position)


def fold(name: str, records: Iterable[ev.Recorded], state: ImageState | None = None) -> ImageState:
    """Fold records into `state` (or a new state for `name`)."""
    state = state or ImageState(name)
    for record in records:
        apply(state, record)
    return state
