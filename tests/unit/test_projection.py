"""Folding events into state (pure): runs move through stages, tags follow Promoted."""

from __future__ import annotations

from shared.model import eventcodec
from shared.model import events as ev
from shared.model.projection import ImageState, fold, from_json, to_json

DIGEST = "sha256:" + "a" * 64
BASE = "sha256:" + "b" * 64


def recorded(events: list[ev.Event]) -> list[ev.Recorded]:
    return [
        ev.Recorded("img", i, f"2026-01-01T00:00:{i:02d}Z", e, f"{i}-0")
        for i, e in enumerate(events)
    ]


def happy_run(run_id: str, version: str) -> list[ev.Event]:
    return [
        ev.ReleaseDetected(run_id, version, "python:3-alpine", BASE, "check"),
        ev.BuildStarted(run_id, "t1"),
        ev.BuildSucceeded(run_id, DIGEST, "alpine", "3.22.2"),
        ev.TestStarted(run_id, "t2"),
        ev.TestsPassed(run_id, DIGEST, (ev.StepRecord("aws-version", 0, "aws-cli/1"),)),
        ev.PromotionStarted(run_id, "t3"),
        ev.Promoted(run_id, DIGEST, version, ("1.0.0", "latest")),
        ev.VersionsCommitted(run_id, "c0ffee", "img-1.0.0"),
        ev.RunCompleted(run_id),
    ]


def test_a_whole_run_folds_to_done_with_tags() -> None:
    state = fold("img", recorded(happy_run("r1", "1.0.0")))
    run = state.runs["r1"]
    assert (run.stage, run.status, run.digest, run.commit) == ("done", "done", DIGEST, "c0ffee")
    assert state.tags["latest"].digest == DIGEST and state.tags["latest"].run_id == "r1"
    assert state.position == 9 and state.last_stream_id == "8-0"


def test_failed_tests_leave_tags_alone() -> None:
    events = [
        *happy_run("r1", "1.0.0"),
        ev.ReleaseDetected("r2", "1.1.0", "python:3-alpine", BASE, "check"),
        ev.BuildSucceeded("r2", "sha256:" + "c" * 64, "alpine", "3.22.2"),
        ev.TestsFailed("r2", "sha256:" + "c" * 64, "s3-mb", "AccessDenied"),
    ]
    state = fold("img", recorded(events))
    assert state.runs["r2"].status == "failed"
    assert "s3-mb" in state.runs["r2"].error
    assert {t.digest for t in state.tags.values()} == {DIGEST}


def test_check_errors_are_set_and_cleared() -> None:
    state = fold("img", recorded([ev.CheckFailed("img: check failed: 404")]))
    assert state.check_error.startswith("img: check failed")
    state = fold("img", recorded([ev.CheckRecovered()]), state)
    assert state.check_error == ""


def test_snapshot_round_trip_is_exact() -> None:
    state = fold("img", recorded(happy_run("r1", "1.0.0")))
    assert from_json(to_json(state)) == state


def test_incremental_fold_equals_fold_from_scratch() -> None:
    records = recorded(happy_run("r1", "1.0.0") + happy_run("r2", "1.1.0"))
    whole = fold("img", records)
    part = fold("img", records[:5])
    part = fold("img", records[5:], from_json(to_json(part)))
    assert part == whole
    assert isinstance(whole, ImageState)


def test_events_round_trip_through_json() -> None:
    for event in happy_run("r1", "1.0.0"):
        raw = eventcodec.encode("img", 3, "2026-01-01T00:00:00Z", event)
        assert eventcodec.decode(raw).event == event


def test_an_event_that_cannot_happen_is_refused_and_counted_not_applied() -> None:
    """PromotionStarted after RunCompleted, a second success, tests before a build."""
    events = [
        *happy_run("r1", "1.0.0"),
        ev.PromotionStarted("r1", "late"),
        ev.BuildSucceeded("r1", "sha256:" + "d" * 64, "alpine", "3.23"),
        ev.ReleaseDetected("r2", "1.1.0", "python:3-alpine", BASE, "check"),
        ev.TestsPassed("r2", DIGEST, ()),
    ]
    state = fold("img", recorded(events))
    assert state.refused == 3
    assert state.runs["r1"].stage == "done" and state.runs["r1"].digest == DIGEST
    assert state.runs["r2"].stage == "detected"


def test_check_allowed_names_the_run_and_its_state() -> None:
    import pytest

    from shared.model.projection import InvalidTransition, check_allowed

    state = fold("img", recorded(happy_run("r1", "1.0.0")))
    with pytest.raises(InvalidTransition, match="PromotionStarted cannot follow run r1 at done"):
        check_allowed(state, ev.PromotionStarted("r1", "x"))


def test_runs_are_ordered_by_version_then_detection() -> None:
    events = [
        ev.ReleaseDetected("new-base", "1.0.0", "b", "sha256:" + "e" * 64, "check"),
        ev.ReleaseDetected("older", "0.9.0", "b", BASE, "check"),
        ev.ReleaseDetected("newer-base", "1.0.0", "b", "sha256:" + "f" * 64, "check"),
    ]
    runs = fold("img", recorded(events)).runs
    ordered = sorted(runs.values(), key=lambda r: r.order)
    assert [r.run_id for r in ordered] == ["older", "new-base", "newer-base"]


def test_an_older_event_version_is_upcast_when_read() -> None:
    """BuildFailed version 1 (before `cause`) reads as a definite failure."""
    import json

    from shared.model.pipeline import Cause

    raw = json.dumps(
        {
            "type": "BuildFailed",
            "schema": 1,
            "image": "img",
            "position": 1,
            "at": "2026-01-01T00:00:01Z",
            "data": {"run_id": "r1", "error": "img: build failed", "stage": "build"},
        }
    )
    event = eventcodec.decode(raw).event
    assert event == ev.BuildFailed("r1", "img: build failed", Cause.DEFINITE)
    assert json.loads(eventcodec.encode("img", 1, "t", event))["schema"] == 2


def test_a_newer_event_version_than_this_freshen_is_unreadable() -> None:
    import json

    import pytest

    raw = json.dumps(
        {"type": "CheckRecovered", "schema": 9, "image": "i", "position": 0, "at": "t", "data": {}}
    )
    with pytest.raises(eventcodec.UnknownEvent, match="newer than this freshen"):
        eventcodec.decode(raw)


def test_hold_release_and_rollback_fold_into_the_image() -> None:
    older = [e for e in happy_run("r1", "1.0.0")]
    newer = [
        ev.ReleaseDetected("r2", "1.1.0", "python:3-alpine", BASE, "check"),
        ev.BuildStarted("r2", "b2"),
        ev.BuildSucceeded("r2", "sha256:" + "c" * 64, "alpine", "3.22.2"),
        ev.TestStarted("r2", "t2"),
        ev.TestsPassed("r2", "sha256:" + "c" * 64, ()),
        ev.PromotionStarted("r2", "p2"),
        ev.Promoted("r2", "sha256:" + "c" * 64, "1.1.0", ("1.1.0", "latest")),
        ev.PromotionsHeld("ops", "1.1.0 breaks s3"),
        ev.RolledBack("r1", "ops", "1.1.0 breaks s3", (ev.TagMove("latest", "x", DIGEST),)),
    ]
    state = fold("img", recorded(older + newer))
    assert state.held == "ops: 1.1.0 breaks s3"
    assert state.tags["latest"].run_id == "r1" and state.tags["latest"].digest == DIGEST
    state = fold("img", [ev.Recorded("img", 99, "t", ev.PromotionsReleased("ops", "fixed"))], state)
    assert state.held == ""


def test_promotions_are_held_once_and_released_only_when_held() -> None:
    import pytest

    from shared.model.aggregate import InvalidTransition, check_allowed

    state = fold("img", [])
    with pytest.raises(InvalidTransition, match="already on"):
        check_allowed(state, ev.PromotionsReleased("ops", "nothing held"))
    state = fold("img", recorded([ev.PromotionsHeld("ops", "1.1.0 breaks s3")]), state)
    with pytest.raises(InvalidTransition, match="already held"):
        check_allowed(state, ev.PromotionsHeld("dev", "again"))
    assert state.held == "ops: 1.1.0 breaks s3"
