"""A whole freshen of real processes that fault tests and benchmarks can kill, restart and
starve.

Workers (one per queue at concurrency 1 unless asked otherwise: `check2` is a second worker of
queue `check`) and beats run as subprocesses with the settings given; the calling process
keeps its own context and Celery app (built from the same settings, never the cached global
ones) to start runs and read the event log.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery

from shared import sends
from shared.context import Context, build_context
from shared.model.events import Recorded
from shared.model.pipeline import spec
from shared.model.projection import RunState
from shared.stages.check import read_upstream, start_run
from shared.testing.services import for_queue, settings_from, shared_registry_env
from shared.testing.workers import ROOT, Worker, Workers
from workers.app import celery_config

ARTIFACTS = ROOT / "artifacts"
QUEUES = ("check", "build", "test", "promote")


class System:
    """Processes, a context and a sender app; use as a context manager (`running`)."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        overrides: Mapping[str, Mapping[str, str]] = {},
        concurrency: Mapping[str, int] = {},
        logs: Path = ARTIFACTS / "faults",
    ) -> None:
        self.name = name
        env = {**env, **shared_registry_env(env)}
        self.overrides = overrides
        self.concurrency = concurrency
        self.settings = settings_from(env)
        self.ctx: Context = build_context(self.settings)
        self.app = Celery("freshen-system", set_as_current=False)
        self.app.conf.update(celery_config(self.settings))
        node = f"{name}-{uuid.uuid4().hex[:6]}"
        self.workers = Workers(self.app, env, logs, node, log_prefix=f"{name}-")
        self.beats: dict[str, subprocess.Popen[bytes]] = {}
        self._beats_started: set[str] = set()

    def log_path(self, proc: str) -> Path:
        return self.workers.log_path(proc)

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """Every running process by name: workers and beats."""
        return {**self.workers.processes, **self.beats}

    def start(self, proc: str) -> None:
        """Start a worker for queue `proc` (`check2`: a second one of `check`) and wait until it
        answers, or a beat (`beat`, `beat2`, …)."""
        if proc.startswith("beat"):
            self._start_beat(proc)
            return
        worker = Worker.named(proc, self.concurrency.get(proc, 1), **self.overrides.get(proc, {}))
        self.workers.start(worker)
        self.workers.wait_ready(proc)

    def _start_beat(self, proc: str) -> None:
        schedule = str(self.log_path(proc).with_suffix(".schedule"))
        command = [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "-s", schedule]
        # Never the registry credentials: a beat only sends tasks.
        env = for_queue({**self.workers.env, **self.overrides.get(proc, {})}, "beat")
        # A restart appends to its log; a first start truncates the last session's log.
        again = proc in self._beats_started
        self._beats_started.add(proc)
        with self.log_path(proc).open("ab" if again else "wb") as out:
            self.beats[proc] = subprocess.Popen(
                [*command, "-l", "INFO"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def start_all(self, procs: tuple[str, ...] = (*QUEUES, "beat")) -> None:
        for proc in procs:
            self.start(proc)

    def kill_child(self, queue: str) -> float:
        """kill -9 the worker's pool child (the process running the task); when (wall clock)."""
        return self.workers.kill_pool(queue)

    def kill_worker(self, queue: str) -> float:
        """kill -9 the whole worker (main process, pool, their git subprocesses) and restart it,
        as a supervisor would; when it was killed (wall clock)."""
        killed_at = self.workers.kill(queue)
        self.workers.restart(queue)
        return killed_at

    def stop(self, proc: str) -> None:
        if proc in self.beats:
            beat = self.beats.pop(proc)
            beat.terminate()
            beat.wait(timeout=30)
        else:
            self.workers.stop(proc)

    def close(self) -> None:
        for beat in list(self.beats):
            self.stop(beat)
        self.workers.stop()  # all at once: each may finish its task within the stop timeout
        self.ctx.redis.close()
        self.app.close()

    # The event log and runs, read in this process.

    def rebuild(self, image: str, version: str, force: bool = False) -> str:
        """Start a run of `version` on the current base and send its build; the run id."""
        definition = self.ctx.definition(image)
        upstream = read_upstream(self.ctx, definition, version)
        run_id, started = start_run(self.ctx, definition, upstream, "rebuild", force)
        if started:  # as a check worker hands it on: marked queued, so never re-sent meanwhile
            sends.Dispatcher(self.ctx, self._send_attempt)("build", image, run_id)
        return run_id

    def _send_attempt(self, task: str, args: list[Any], task_id: str) -> None:
        self.app.send_task(task, args=args, task_id=task_id)

    def send(self, stage: str, image: str, run_id: str) -> None:
        self.app.send_task(spec(stage).task, args=[image, run_id])

    def records(self, image: str, run_id: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.ctx.store.read(image)
            if run_id is None or getattr(r.event, "run_id", None) == run_id
        ]

    def wait_run(
        self, image: str, run_id: str, done: Callable[[RunState], bool], timeout_s: float
    ) -> RunState:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.ctx.state(image).runs.get(run_id)
            if run is not None and done(run):
                return run
            time.sleep(0.05)
        raise AssertionError(f"{image}: run {run_id} not there after {timeout_s} s: {run}")

    def wait_terminal(self, image: str, run_id: str, timeout_s: float = 180) -> RunState:
        return self.wait_run(image, run_id, lambda r: r.status != "running", timeout_s)

    def wait_event(self, image: str, run_id: str, kind: str, timeout_s: float = 60) -> float:
        """Wait until the run has an event of type `kind`; the monotonic time it was seen."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(r.type == kind for r in self.records(image, run_id)):
                return time.monotonic()
            time.sleep(0.02)
        raise AssertionError(f"{image}: run {run_id}: no {kind} after {timeout_s} s")


@contextmanager
def running(
    name: str,
    env: Mapping[str, str],
    procs: tuple[str, ...] = (*QUEUES, "beat"),
    overrides: Mapping[str, Mapping[str, str]] = {},
    concurrency: Mapping[str, int] = {},
    logs: Path = ARTIFACTS / "faults",
) -> Iterator[System]:
    system = System(name, env, overrides, concurrency, logs)
    try:
        system.start_all(procs)
        yield system
    finally:
        system.close()
