"""Stage durations folded from plain records: bucket edges, resumed and refused events."""

from __future__ import annotations

from shared import events as ev
from shared.metrics import BUCKETS_S, Durations, ImageFold
from shared.model import ImageState
from shared.pipeline import Stage

BASE = "sha256:" + "b" * 64
DIGEST = "sha256:" + "d" * 64


def at(second: float) -> str:
    return f"2026-12-01T04:00:{second:09.6f}Z"


def fed(*timed: tuple[float, ev.Event]) -> ImageFold:
    fold = ImageFold(ImageState("tool"))
    for position, (second, event) in enumerate(timed):
        fold.feed(ev.Recorded("tool", position, at(second), event))
    return fold


def test_a_value_on_a_bound_counts_in_that_bucket_and_beyond_the_last_only_in_inf() -> None:
    durations = Durations()
    durations.observe(BUCKETS_S[0])
    durations.observe(BUCKETS_S[-1] + 1)
    buckets = dict(durations.buckets())
    assert buckets[str(BUCKETS_S[0])] == 1
    assert buckets[str(BUCKETS_S[-1])] == 1
    assert buckets["+Inf"] == 2
    assert durations.sum_s == BUCKETS_S[0] + BUCKETS_S[-1] + 1


def test_a_resumed_stage_lasts_from_its_first_start_and_refused_events_count_nothing() -> None:
    fold = fed(
        (0, ev.ReleaseDetected("r1", "1.0.0", "python:3-alpine", BASE, "check")),
        (1, ev.BuildStarted("r1", "a")),
        (3, ev.RunResumed("r1", "build", "a", ev.RESUMED_LOST)),
        (4, ev.BuildStarted("r1", "a")),
        (8.5, ev.BuildSucceeded("r1", DIGEST, "alpine", "3")),
        (9, ev.BuildStarted("r1", "b")),  # refused: the run is built
        (20, ev.BuildSucceeded("r1", DIGEST, "alpine", "3")),  # refused
        (21, ev.CheckFailed("tool: check failed: x")),
    )
    built = fold.durations[(Stage.BUILD, "succeeded")]
    assert (sum(built.counts), built.sum_s) == (1, 7.5)
    assert fold.state.refused == 2 and fold.check_failures == 1
    assert fold.started_s == {}
