"""What the workers' Celery task events (`-E`, the feed Flower shows) tell a test or a
benchmark: which worker started a task, when a task ran, and when it started again after a
kill; received in a thread while the block runs."""

from __future__ import annotations

import threading
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Self

from celery import Celery

from shared import sends


class Background:
    """`with` runs `_loop` in a thread until the block ends; `_loop` watches `self._stop`. What
    the loop raised is kept in `failure`, for the caller to report, not lost in the thread."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name)
        self.failure: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.failure = exc

    def _loop(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Span:
    """One finished task as its events tell it: wall-clock start and end, and its result."""

    task_id: str
    start: float
    end: float
    result: str | None  # the repr of what it returned; None when it failed


class TaskEvents(Background):
    """Every task event the workers on `app`'s broker send while the block runs."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        super().__init__("task-events")

    def _loop(self) -> None:
        with self.app.connection_for_read() as connection:
            receiver = self.app.events.Receiver(connection, handlers={"*": self.events.append})
            # `capture` times out only after a quiet second: while events flow, stop it here.
            receiver.on_iteration = lambda: setattr(receiver, "should_stop", self._stop.is_set())
            while not self._stop.is_set():
                with suppress(TimeoutError, OSError):  # nothing came within the timeout
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)

    def hostnames(self) -> dict[str, str]:
        """Which worker (Celery node name) started each task id (the last start of one)."""
        return {
            e["uuid"]: str(e.get("hostname", ""))
            for e in list(self.events)
            if e.get("type") == "task-started" and "uuid" in e
        }

    def task_ids(self, task: str, args: list[Any]) -> set[str]:
        """The ids of every `task` received with these arguments."""
        # Stage and check tasks are sent with args shown as "image=… run=…" (sends.describe),
        # batch checks as "images=… (n)" (sends.describe_images).
        batch = args[0] if len(args) == 1 and isinstance(args[0], list) else None
        described = sends.describe_images(batch) if batch else sends.describe(*args)
        shown = (repr(args), repr(tuple(args)), args, described)
        return {
            e.get("uuid", "")
            for e in list(self.events)
            if e.get("type") == "task-received" and e.get("name") == task and e.get("args") in shown
        }

    def started_after(self, task: str, args: list[Any], after: float) -> float | None:
        """When (wall clock) `task` with these arguments first started after `after`: a
        redelivered or re-sent attempt keeps its task id, so every start of an id counts."""
        ids = self.task_ids(task, args)
        starts = [
            float(e["timestamp"])
            for e in list(self.events)
            if e.get("type") == "task-started" and e.get("uuid") in ids
            and float(e["timestamp"]) > after
        ]  # fmt: skip
        return min(starts, default=None)

    def spans(self, task: str, args: list[Any]) -> list[Span]:
        """Every finished run of `task` with these arguments, in order of start."""
        ids = self.task_ids(task, args)
        by_id: dict[str, dict[str, dict[str, Any]]] = {}
        for event in list(self.events):
            if event.get("uuid") in ids:
                by_id.setdefault(event["uuid"], {})[event.get("type", "")] = event
        spans = []
        for task_id, kinds in by_id.items():
            started = kinds.get("task-started")
            ended = kinds.get("task-succeeded") or kinds.get("task-failed")
            if started is None or ended is None:
                continue
            result = ended.get("result") if ended["type"] == "task-succeeded" else None
            spans.append(Span(task_id, started["timestamp"], ended["timestamp"], result))
        return sorted(spans, key=lambda s: s.start)
