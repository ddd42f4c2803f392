"""State folded from events: what each tag points at and where each run is.

`fold` is pure. The live projection is a snapshot in Redis plus the events after it; `replay`
folds every stream from scratch, and must give the same state.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from pydantic import TypeAdapter

from shared import events as ev
from shared.constants import SNAPSHOT_PREFIX
from shared.eventstore import EventStore

# Stages of a run in order; a run's `stage` is the last one it reached.
STAGES = ("detected", "building", "built", "testing", "tested", "promoting", "promoted", "done")


@dataclass
class RunState:
    """One run: inputs, the stage it reached and what each stage recorded."""

    run_id: str
    tool_version: str
    base_image: str
    base_digest: str
    reason: str
    detected_at: str
    stage: str = "detected"
    status: str = "running"  # running, failed or done
    updated_at: str = ""
    digest: str = ""
    os_id: str = ""
    os_version: str = ""
    error: str = ""
    failed_command: str = ""
    results: list[ev.StepRecord] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    commit: str = ""
    git_tag: str = ""
    attempts: dict[str, str] = field(default_factory=dict)  # stage → task attempt id
    resumes: dict[str, int] = field(default_factory=dict)  # stage → lost attempts resumed
    resumed_at: str = ""  # time of the last RunResumed

    def reached(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)


@dataclass
class TagState:
    """What a tag points at, and which run put it there."""

    digest: str
    tool_version: str
    run_id: str


@dataclass
class ImageState:
    """Everything known about one image; `position` is how many events were folded."""

    name: str
    position: int = 0
    last_stream_id: str = "-"
    runs: dict[str, RunState] = field(default_factory=dict)
    tags: dict[str, TagState] = field(default_factory=dict)
    check_error: str = ""

    def run_for(self, tool_version: str, base_digest: str) -> RunState | None:
        """The most recent run of these inputs, if any."""
        found = [
            r
            for r in self.runs.values()
            if r.tool_version == tool_version and r.base_digest == base_digest
        ]
        return found[-1] if found else None


def _run_event(run: RunState, event: ev.Event, at: str) -> None:
    """Apply an event that belongs to a run."""
    run.updated_at = at
    match event:
        case ev.BuildStarted(attempt=attempt):
            run.stage, run.attempts["build"] = "building", attempt
        case ev.BuildSucceeded(digest=digest, os_id=os_id, os_version=os_version):
            run.stage, run.digest, run.os_id, run.os_version = "built", digest, os_id, os_version
        case ev.TestStarted(attempt=attempt):
            run.stage, run.attempts["test"] = "testing", attempt
        case ev.TestsPassed(results=results):
            run.stage, run.results = "tested", list(results)
        case ev.TestsFailed(failed_command=command, output_tail=tail, results=results):
            run.status, run.failed_command, run.results = "failed", command, list(results)
            run.error = f"test command {command!r} failed: {tail[-500:]}"
        case ev.BuildFailed(error=error) | ev.PromotionFailed(error=error):
            run.status, run.error = "failed", error
        case ev.PromotionStarted(attempt=attempt):
            run.stage, run.attempts["promote"] = "promoting", attempt
        case ev.Promoted(tags=tags, kept=kept):
            run.stage, run.tags, run.kept = "promoted", list(tags), list(kept)
        case ev.VersionsCommitted(commit=commit, tag=tag):
            run.commit, run.git_tag = commit, tag
        case ev.RunCompleted():
            run.stage, run.status = "done", "done"
        case ev.RunResumed(stage=stage, reason=reason):
            run.resumed_at = at
            if reason == ev.RESUMED_LOST:
                run.resumes[stage] = run.resumes.get(stage, 0) + 1


def apply(state: ImageState, record: ev.Recorded) -> None:
    """Fold one event into the image's state (in place)."""
    event = record.event
    state.position = record.position + 1
    state.last_stream_id = record.stream_id or state.last_stream_id
    match event:
        case ev.ReleaseDetected():
            state.runs[event.run_id] = RunState(
                event.run_id,
                event.tool_version,
                event.base_image,
                event.base_digest,
                event.reason,
                detected_at=record.at,
                updated_at=record.at,
            )
        case ev.CheckFailed(error=error):
            state.check_error = error
        case ev.CheckRecovered():
            state.check_error = ""
        case _:
            run = state.runs.get(getattr(event, "run_id", ""))
            if run is not None:
                _run_event(run, event, record.at)
    if isinstance(event, ev.Promoted):
        for tag in event.tags:
            state.tags[tag] = TagState(event.digest, event.tool_version, event.run_id)


def fold(name: str, records: Iterable[ev.Recorded], state: ImageState | None = None) -> ImageState:
    """Fold records into `state` (or a new state for `name`)."""
    state = state or ImageState(name)
    for record in records:
        apply(state, record)
    return state


_STATE = TypeAdapter(ImageState)


def to_json(state: ImageState) -> str:
    return json.dumps(asdict(state), separators=(",", ":"))


def from_json(raw: str | bytes) -> ImageState:
    return _STATE.validate_python(json.loads(raw))


# Replace the snapshot only with a newer one: concurrent readers may race to save.
_SAVE_IF_NEWER = """
local current = tonumber(redis.call('HGET', KEYS[1], 'position') or '-1')
if current < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'position', ARGV[1], 'state', ARGV[2])
end
"""


class Projections:
    """The live projection: a snapshot per image in Redis, brought up to date on read."""

    def __init__(self, client: redis.Redis, store: EventStore) -> None:
        self._redis = client
        self._store = store
        self._save_if_newer = client.register_script(_SAVE_IF_NEWER)

    def load(self, image: str) -> ImageState:
        """The image's current state: snapshot plus any events appended since."""
        raw = self._redis.hget(SNAPSHOT_PREFIX + image, "state")
        state = from_json(raw) if raw else ImageState(image)
        before = state.position
        state = fold(image, self._store.read(image, state.last_stream_id), state)
        if state.position != before:
            key = SNAPSHOT_PREFIX + image
            self._save_if_newer(keys=[key], args=[state.position, to_json(state)])
        return state

    def all(self) -> dict[str, ImageState]:
        return {name: self.load(name) for name in self._store.images()}


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting still frees everything).

    A replay allocates millions of long-lived objects and no reference cycles, so each automatic
    collection only rescans the growing state: with it on, replaying 1M events took 1.7x as long
    (bench/eventlog.py). Process-wide while it lasts; any cycle made meanwhile is collected after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(store: EventStore) -> dict[str, ImageState]:
    """Fold every image's stream from scratch, ignoring snapshots."""
    states: dict[str, ImageState] = {}
    with _cyclic_gc_paused():
        for record in store.read_all():
            state = states.setdefault(record.image, ImageState(record.image))
            apply(state, record)
    return states


def comparable(state: ImageState) -> dict[str, Any]:
    """State without stream ids (the global stream's ids differ from the image stream's)."""
    doc = asdict(state)
    doc.pop("last_stream_id")
    return doc
