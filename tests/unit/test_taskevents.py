"""What the task-event tap reads from the workers' Celery task events (plain event dicts, as
the receiver hands them): when a stage's task started again after a kill, who started what."""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.testing.taskevents import TaskEvents

BUILD = "workers.build.build"


def received(uuid: str, args: str, name: str = BUILD) -> dict[str, Any]:
    return {"type": "task-received", "uuid": uuid, "name": name, "args": args, "timestamp": 1.0}


def started(uuid: str, at: float, hostname: str = "build@here") -> dict[str, Any]:
    return {"type": "task-started", "uuid": uuid, "timestamp": at, "hostname": hostname}


def tap_with(*events: dict[str, Any]) -> TaskEvents:
    tap = TaskEvents(Celery("unit", set_as_current=False))
    tap.events.extend(events)
    return tap


def test_a_re_sent_attempt_keeps_its_task_id_and_its_start_after_the_kill_counts() -> None:
    tap = tap_with(
        received("attempt-1", "image=a run=r1"),
        started("attempt-1", 100.0),  # the attempt the kill ended
        received("other", "image=a run=r2"),
        started("other", 105.0),  # another run's task: not this stage running again
        received("attempt-1", "image=a run=r1"),  # the reconciler re-sent the same attempt
        started("attempt-1", 140.0, "build@replacement"),
    )
    assert tap.started_after(BUILD, ["a", "r1"], after=110.0) == 140.0
    assert tap.started_after(BUILD, ["a", "r2"], after=110.0) is None
    assert tap.started_after("workers.verify.test", ["a", "r1"], after=0.0) is None
    assert tap.hostnames() == {"attempt-1": "build@replacement", "other": "build@here"}


def test_nothing_started_after_the_kill_reads_as_not_running_again() -> None:
    tap = tap_with(received("attempt-1", "image=a run=r1"), started("attempt-1", 100.0))
    assert tap.started_after(BUILD, ["a", "r1"], after=100.5) is None
