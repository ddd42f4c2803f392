"""The pipeline, declared once: each stage's queue, Celery task, time limit and the stage after it.

Routing (workers/app.py), time limits, dispatch (workers/base.py) and reconciliation
(shared/stages/reconcile.py) read this declaration; none keeps a table of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.config import Settings
from shared.constants import Queue


class Stage(StrEnum):
    """A stage of the pipeline; each runs as one Celery task on its own queue."""

    CHECK = "check"
    BUILD = "build"
    TEST = "test"
    PROMOTE = "promote"


class Phase(StrEnum):
    """Where a run is: the last stage outcome or start it recorded, in pipeline order."""

    DETECTED = "detected"
    BUILDING = "building"
    BUILT = "built"
    TESTING = "testing"
    TESTED = "tested"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    DONE = "done"

    @property
    def rank(self) -> int:
        return list(Phase).index(self)


class Status(StrEnum):
    """Whether a run still moves: running, failed (for good, or until retried) or done."""

    RUNNING = "running"
    FAILED = "failed"
    DONE = "done"


class Cause(StrEnum):
    """Why a stage failed: its own outcome (tests failed, bad definition) or infrastructure
    (retries exhausted, worker lost), which reconciliation retries with backoff."""

    DEFINITE = "definite"
    INFRASTRUCTURE = "infrastructure"


@dataclass(frozen=True)
class StageSpec:
    """One stage: where it runs, how long it may take, and where a run waits for it."""

    stage: Stage
    queue: Queue
    task: str  # the Celery task's name; its module is the routing key
    time_limit_setting: str  # the Settings field holding the hard time limit (s)
    waits_in: Phase | None  # the phase in which a run is due for this stage
    works_in: tuple[Phase, ...]  # the phases while an attempt of this stage is working
    next: Stage | None

    @property
    def module(self) -> str:
        return self.task.rsplit(".", 1)[0]

    def time_limit_s(self, settings: Settings) -> int:
        return int(getattr(settings, self.time_limit_setting))


PIPELINE = (
    StageSpec(
        Stage.CHECK, Queue.CHECK, "workers.check.check_image", "check_time_limit_s",
        None, (), Stage.BUILD,
    ),
    StageSpec(
        Stage.BUILD, Queue.BUILD, "workers.build.build", "build_time_limit_s",
        Phase.DETECTED, (Phase.BUILDING,), Stage.TEST,
    ),
    StageSpec(
        Stage.TEST, Queue.TEST, "workers.testing.verify", "test_time_limit_s",
        Phase.BUILT, (Phase.TESTING,), Stage.PROMOTE,
    ),
    StageSpec(
        Stage.PROMOTE, Queue.PROMOTE, "workers.promote.promote", "promote_time_limit_s",
        Phase.TESTED, (Phase.PROMOTING, Phase.PROMOTED), None,
    ),
)  # fmt: skip
SPECS = {spec.stage: spec for spec in PIPELINE}
# The stages a run goes through after it is detected.
RUN_STAGES = tuple(spec for spec in PIPELINE if spec.waits_in is not None)


def spec(stage: Stage | str) -> StageSpec:
    return SPECS[Stage(stage)]


def due_stage(phase: Phase) -> Stage | None:
    """The stage a run in `phase` waits for (it recorded the one before and nothing since)."""
    return next((s.stage for s in RUN_STAGES if s.waits_in == phase), None)


def working_stage(phase: Phase) -> Stage | None:
    """The stage an attempt is working on while the run is in `phase`."""
    return next((s.stage for s in RUN_STAGES if phase in s.works_in), None)


def longest_time_limit_s(settings: Settings) -> int:
    return max(s.time_limit_s(settings) for s in RUN_STAGES)
