"""Which stalled runs the reconciler resumes or fails: a pure function of state, time and lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import events as ev
from shared.constants import LEASE_SLACK_S
from shared.lease import LeaseView
from shared.projection import RunState, fold
from shared.stages.reconcile import Fail, Policy, Resume, decide

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy({"build": 100, "test": 50, "promote": 30}, grace_s=10, max_resumes=2)
FREE = LeaseView(None, 0.0)
DIGEST = "sha256:" + "a" * 64


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def run_after(*events: tuple[float, ev.Event]) -> RunState:
    """The run folded from ReleaseDetected at T0 and then `events` at their times."""
    records = [ev.Recorded("img", 0, at(0), ev.ReleaseDetected("r1", "1.0", "b", DIGEST, "check"))]
    records += [ev.Recorded("img", i + 1, at(t), e) for i, (t, e) in enumerate(events)]
    return fold("img", records).runs["r1"]


def decide_at(run: RunState, seconds: float, held: LeaseView = FREE) -> Resume | Fail | None:
    return decide("img", run, T0 + timedelta(seconds=seconds), POLICY, held)


def test_a_run_whose_build_was_never_sent_is_sent_after_the_grace() -> None:
    run = run_after()
    assert decide_at(run, 5) is None
    assert decide_at(run, 11) == Resume("build", "", ev.RESUMED_NOT_STARTED)


@pytest.mark.parametrize(
    ("done", "due"),
    [
        (ev.BuildSucceeded("r1", DIGEST, "debian", "12"), "test"),
        (ev.TestsPassed("r1", DIGEST, ()), "promote"),
    ],
)
def test_a_finished_stage_whose_next_stage_never_started_is_handed_on(
    done: ev.Event, due: str
) -> None:
    run = run_after((1, ev.BuildStarted("r1", "a1")), (2, done))
    assert decide_at(run, 11) is None
    assert decide_at(run, 13) == Resume(due, "", ev.RESUMED_NOT_STARTED)


def test_a_started_stage_with_a_live_lease_is_left_alone_however_long() -> None:
    run = run_after((1, ev.BuildStarted("r1", "a1")))
    live = LeaseView("a1", LEASE_SLACK_S + 1)
    assert decide_at(run, 10_000, live) is None


def test_a_started_stage_whose_lease_is_free_or_past_its_time_limit_is_resumed_as_itself() -> None:
    run = run_after((1, ev.BuildStarted("r1", "a1")))
    assert decide_at(run, 5) is None  # within the grace: the attempt may be recording its end
    assert decide_at(run, 12) == Resume("build", "a1", ev.RESUMED_LOST)
    stale = LeaseView("a1", LEASE_SLACK_S)
    assert decide_at(run, 12, stale) == Resume("build", "a1", ev.RESUMED_LOST)


def test_a_resumed_attempt_gets_a_time_limit_to_start_before_it_is_resumed_again() -> None:
    run = run_after(
        (1, ev.TestStarted("r1", "t1")), (20, ev.RunResumed("r1", "test", "t1", "lost"))
    )
    assert run.resumes == {"test": 1}
    assert decide_at(run, 20 + 50 + 9) is None  # grace + the test's time limit
    assert decide_at(run, 20 + 50 + 11) == Resume("test", "t1", ev.RESUMED_LOST)


def test_after_max_resumes_the_stage_fails_with_a_message_naming_image_and_stage() -> None:
    lost = [ev.RunResumed("r1", "promote", "p1", ev.RESUMED_LOST)] * 2
    run = run_after(
        (1, ev.BuildStarted("r1", "a1")),
        (2, ev.BuildSucceeded("r1", DIGEST, "debian", "12")),
        (3, ev.TestStarted("r1", "t1")),
        (4, ev.TestsPassed("r1", DIGEST, ())),
        (5, ev.PromotionStarted("r1", "p1")),
        (10, lost[0]),
        (60, lost[1]),
        (61, ev.Promoted("r1", DIGEST, "1.0", ("1.0",))),
    )
    action = decide_at(run, 200)
    assert isinstance(action, Fail) and action.stage == "promote"
    assert action.error.startswith("img: promote failed: run r1 stopped 3 times")


def test_not_started_resumes_never_count_towards_failing() -> None:
    resumed = [
        (float(10 * i), ev.RunResumed("r1", "build", "", ev.RESUMED_NOT_STARTED)) for i in range(5)
    ]
    run = run_after(*resumed)
    assert run.resumes == {} and run.resumed_at == at(40)
    assert decide_at(run, 51) == Resume("build", "", ev.RESUMED_NOT_STARTED)


@pytest.mark.parametrize(
    "end",
    [
        ev.BuildFailed("r1", "boom"),
        ev.TestsFailed("r1", DIGEST, "x", "tail"),
        ev.RunCompleted("r1"),
    ],
)
def test_finished_or_failed_runs_are_never_touched(end: ev.Event) -> None:
    run = run_after((1, ev.BuildStarted("r1", "a1")), (2, end))
    assert decide_at(run, 100_000) is None


def test_policy_grace_is_two_reconcile_intervals() -> None:
    from shared.config import Settings

    with pytest.MonkeyPatch.context() as patch:
        import os

        for key in [k for k in os.environ if k.startswith("FRESHEN_")]:
            patch.delenv(key)
        settings = Settings(reconcile_interval_s=7, build_time_limit_s=99)
    policy = Policy.of(settings)
    assert policy.grace_s == 14 and policy.time_limits["build"] == 99


@pytest.mark.parametrize(("limit", "timeout"), [(900, 858.0), (45, 22.0), (20, 3.0), (4, 1.0)])
def test_the_test_container_stops_before_the_soft_time_limit(limit: int, timeout: float) -> None:
    from shared.stages.verify import container_timeout_s

    assert container_timeout_s(limit) == timeout
