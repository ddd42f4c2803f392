"""Stage durations folded from plain records: bucket edges, resumed and refused events."""

from __future__ import annotations

from typing import cast

import redis

from shared.adapters.eventstore import EventStore
from shared.metrics import BUCKETS_S, Durations, EventLogCollector, ImageFold
from shared.model import events as ev
from shared.model.aggregate import ImageState
from shared.model.pipeline import Stage

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


class _NoChecks:
    def hgetall(self, _key: str) -> dict[bytes, bytes]:
        return {}

    def xinfo_groups(self, _key: str) -> list[dict[str, object]]:
        return []


def test_each_finding_of_a_vulnerability_check_is_a_sample_and_refused_checks_none() -> None:
    flaw = ev.VulnerabilityFinding("PYSEC-2099-1", "vulntool", "2.0.0", ("2.0.3",))
    known = ev.VulnerabilityFinding("GHSA-aaaa-bbbb-cccc", "six", "1.0", (), ignored="not used")
    check = ev.VulnerabilitiesChecked("r1", DIGEST, "2.0.0", "warn", 3, (flaw, known))
    fold = fed(
        (0, ev.ReleaseDetected("r1", "2.0.0", "python:3-alpine", BASE, "check")),
        (1, ev.VulnerabilitiesChecked("r1", DIGEST, "2.0.0", "warn", 1, (flaw,))),  # refused
        (2, ev.BuildStarted("r1", "a")),
        (3, ev.BuildSucceeded("r1", DIGEST, "alpine", "3")),
        (4, ev.TestStarted("r1", "t")),
        (5, check),
        (6, ev.TestsPassed("r1", DIGEST, ())),
    )
    collector = EventLogCollector(cast(EventStore, None), cast(redis.Redis, _NoChecks()))
    collector._folds = {"tool": fold}
    collector.refresh = lambda: {"tool": fold}  # type: ignore[method-assign]
    [family] = [m for m in collector.collect() if m.name == "freshen_vulnerabilities"]
    assert [(s.labels, s.value) for s in family.samples] == [
        (
            {"image": "tool", "version": "2.0.0", "run": "r1", "id": "PYSEC-2099-1",
             "package": "vulntool", "installed": "2.0.0", "ignored": "false"},
            1.0,
        ),
        (
            {"image": "tool", "version": "2.0.0", "run": "r1", "id": "GHSA-aaaa-bbbb-cccc",
             "package": "six", "installed": "1.0", "ignored": "true"},
            1.0,
        ),
    ]  # fmt: skip
    assert fold.state.refused == 1
