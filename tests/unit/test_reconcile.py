"""Which stalled runs the reconciler resumes, retries or fails: a pure function of state, time,
the stage's lease and whether its attempt is queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import sends
from shared.adapters.lease import LeaseView
from shared.model import events as ev
from shared.model.pipeline import Cause
from shared.model.projection import RunState, fold
from shared.stages.reconcile import Fail, Policy, Resume, Retry, decide

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy(grace_s=10, max_resumes=2, max_sends=3, infra_retries=2, infra_backoff_s=100)
FREE = LeaseView(None, 0.0)
DIGEST = "sha256:" + "a" * 64


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def run_after(*events: tuple[float, ev.Event]) -> RunState:
    """The run folded from ReleaseDetected at T0 and then `events` at their times."""
    records = [ev.Recorded("img", 0, at(0), ev.ReleaseDetected("r1", "1.0", "b", DIGEST, "check"))]
    records += [ev.Recorded("img", i + 1, at(t), e) for i, (t, e) in enumerate(events)]
    return fold("img", records).runs["r1"]


def decide_at(
    run: RunState, seconds: float, held: LeaseView = FREE, queued: frozenset[str] = frozenset()
) -> Resume | Retry | Fail | None:
    def sent(task_id: str) -> str | None:
        return sends.QUEUED if task_id in queued else None

    return decide("img", run, T0 + timedelta(seconds=seconds), POLICY, held, sent)


def test_a_run_whose_build_was_never_sent_is_sent_after_the_grace() -> None:
    run = run_after()
    assert decide_at(run, 5) is None
    assert decide_at(run, 11) == Resume("build", "", ev.RESUMED_NOT_STARTED)


def test_a_run_whose_next_stage_is_queued_is_never_sent_again_however_long() -> None:
    run = run_after()
    queued = frozenset({sends.attempt_id("r1", "build", 0, 0)})
    assert decide_at(run, 100_000, queued=queued) is None


def test_a_next_stage_in_a_workers_hands_before_its_first_event_is_not_sent_again() -> None:
    """A promote waiting for the image's lease is started, then marked queued again while it
    waits; a reconcile between the two marks must not send a second attempt."""
    run = run_after(
        (1, ev.BuildStarted("r1", "a1")),
        (1, ev.BuildSucceeded("r1", DIGEST, "debian", "12")),
        (1, ev.TestStarted("r1", "t1")),
        (2, ev.TestsPassed("r1", DIGEST, ())),
    )
    assert run.stage == "tested"
    attempt = sends.attempt_id("r1", "promote", 0, 0)

    def sent(task_id: str) -> str | None:
        return sends.STARTED if task_id == attempt else None

    assert decide("img", run, T0 + timedelta(seconds=100_000), POLICY, FREE, sent) is None


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
    started = ev.BuildStarted("r1", "a1") if due == "test" else ev.TestStarted("r1", "t1")
    if due == "promote":
        run = run_after(
            (1, ev.BuildStarted("r1", "a1")),
            (1, ev.BuildSucceeded("r1", DIGEST, "debian", "12")),
            (1, started),
            (2, done),
        )
    else:
        run = run_after((1, started), (2, done))
    assert decide_at(run, 11) is None
    assert decide_at(run, 13) == Resume(due, "", ev.RESUMED_NOT_STARTED)


def test_re_sends_back_off_and_are_capped() -> None:
    resumed = ev.RunResumed("r1", "build", "", ev.RESUMED_NOT_STARTED)
    once = run_after((100, resumed))
    assert decide_at(once, 100 + 19) is None  # the second wait is twice the grace
    assert decide_at(once, 100 + 21) == Resume("build", "", ev.RESUMED_NOT_STARTED)
    thrice = run_after((100, resumed), (200, resumed), (300, resumed))
    action = decide_at(thrice, 10_000)
    assert isinstance(action, Fail) and "sent 4 times and never started" in action.error


def test_a_started_stage_with_a_live_lease_is_left_alone_however_long() -> None:
    run = run_after((1, ev.BuildStarted("r1", "a1")))
    assert decide_at(run, 10_000, LeaseView("a1", 20)) is None


def test_a_started_stage_whose_lease_lapsed_is_resumed_as_itself() -> None:
    run = run_after((1, ev.BuildStarted("r1", "a1")))
    assert decide_at(run, 2) == Resume("build", "a1", ev.RESUMED_LOST)
    assert decide_at(run, 2, queued=frozenset({"a1"})) is None  # the resumed attempt waits


def test_after_max_resumes_the_stage_fails_on_infrastructure() -> None:
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


def test_an_infrastructure_failure_is_retried_with_backoff_a_bounded_number_of_times() -> None:
    infra = ev.BuildFailed("r1", "registry gone", Cause.INFRASTRUCTURE)
    run = run_after((1, ev.BuildStarted("r1", "a1")), (2, infra))
    assert decide_at(run, 50) is None
    assert decide_at(run, 103) == Retry("build", 1)
    retried = run_after(
        (1, ev.BuildStarted("r1", "a1")),
        (2, infra),
        (110, ev.RunRetried("r1", "build", 1)),
        (111, ev.BuildStarted("r1", "a2")),
        (112, infra),
    )
    assert retried.retries == 1 and retried.status == "failed"
    assert decide_at(retried, 112 + 199) is None  # the wait doubled
    assert decide_at(retried, 112 + 201) == Retry("build", 2)
    twice = run_after(
        (1, ev.BuildStarted("r1", "a1")),
        (2, infra),
        (110, ev.RunRetried("r1", "build", 1)),
        (112, infra),
        (400, ev.RunRetried("r1", "build", 2)),
        (401, infra),
    )
    assert decide_at(twice, 1_000_000) is None  # infra_retries reached


@pytest.mark.parametrize(
    "end",
    [
        ev.BuildFailed("r1", "boom"),
        ev.TestsFailed("r1", DIGEST, "x", "tail"),
        ev.RunCompleted("r1"),
    ],
)
def test_finished_or_definitely_failed_runs_are_never_touched(end: ev.Event) -> None:
    before = [
        (1.0, ev.BuildStarted("r1", "a1")),
        (1.0, ev.BuildSucceeded("r1", DIGEST, "debian", "12")),
        (1.0, ev.TestStarted("r1", "t1")),
        (1.0, ev.TestsPassed("r1", DIGEST, ())),
        (1.0, ev.PromotionStarted("r1", "p1")),
        (1.0, ev.Promoted("r1", DIGEST, "1.0", ("1.0",))),
    ]
    run = run_after(*before[: 6 if isinstance(end, ev.RunCompleted) else 1], (2, end))
    assert run.status != "running"
    assert decide_at(run, 100_000) is None


def test_policy_grace_is_two_reconcile_intervals() -> None:
    from shared.config import Settings

    with pytest.MonkeyPatch.context() as patch:
        import os

        for key in [k for k in os.environ if k.startswith("FRESHEN_")]:
            patch.delenv(key)
        settings = Settings(reconcile_interval_s=7, infra_retries=5)
    policy = Policy.of(settings)
    assert policy.grace_s == 14 and policy.infra_retries == 5


@pytest.mark.parametrize(("limit", "timeout"), [(900, 858.0), (45, 22.0), (20, 3.0), (4, 1.0)])
def test_the_test_container_stops_before_the_soft_time_limit(limit: int, timeout: float) -> None:
    from shared.stages.verify import container_timeout_s

    assert container_timeout_s(limit) == timeout
