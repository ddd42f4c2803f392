"""A whole freshen of real processes that fault tests can kill, restart and starve.

Workers (prefork, one per queue at concurrency 1 unless a test asks for more: `check2` is a
second worker of queue `check`) and beats run as subprocesses with the settings a test gives
them; the test process keeps its own context and Celery app (built from the same settings,
never the cached global ones) to start runs and read the event log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from celery import Celery

from shared import sends
from shared.context import Context, build_context
from shared.events import Recorded
from shared.pipeline import spec
from shared.projection import RunState
from shared.stages.check import read_upstream, start_run
from tests.conftest import for_queue, shared_registry_env
from tests.support.isolated import children, descendants, settings_from
from tests.support.throwaway import wait_until
from workers.app import celery_config

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
QUEUES = ("check", "build", "test", "promote")


class System:
    """Processes, a context and a sender app for one fault test; use as a context manager."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        overrides: Mapping[str, Mapping[str, str]] = {},
        concurrency: Mapping[str, int] = {},
    ) -> None:
        self.name = name
        self.node = f"{name}-{uuid.uuid4().hex[:6]}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
        env = {**env, **shared_registry_env(env)}
        self.env = {**base, **env}
        self.overrides = overrides
        self.concurrency = concurrency
        self.settings = settings_from(env)
        self.ctx: Context = build_context(self.settings)
        self.app = Celery("freshen-faults", set_as_current=False)
        self.app.conf.update(celery_config(self.settings))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started: set[str] = set()  # a restarted process appends to its log
        (ARTIFACTS / "faults").mkdir(parents=True, exist_ok=True)

    def log_path(self, proc: str) -> Path:
        return ARTIFACTS / "faults" / f"{self.name}-{proc}.log"

    def start(self, proc: str) -> None:
        """Start a worker for queue `proc` (`check2`: a second one of `check`), or a beat
        (`beat`, `beat2`, …)."""
        celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
        if proc.startswith("beat"):
            schedule = str(self.log_path(proc).with_suffix(".schedule"))
            command = [*celery, "beat", "-s", schedule, "-l", "INFO"]
        else:
            queue, node = proc.rstrip("0123456789"), f"{proc}@{self.node}"
            pool = str(self.concurrency.get(proc, 1))
            command = [*celery, "worker", "-Q", queue, "-n", node, "-c", pool, "-E", "-l", "INFO"]
        log = self.log_path(proc)
        # A restart appends to its log; a first start truncates the last session's log.
        offset = log.stat().st_size if proc in self._started and log.exists() else 0
        env = {**self.env, **self.overrides.get(proc, {})}
        # The registry credentials only for the workers that push; never for a beat.
        env = for_queue(env, "beat" if proc.startswith("beat") else proc.rstrip("0123456789"))
        with log.open("ab" if proc in self._started else "wb") as out:
            self._started.add(proc)
            self.procs[proc] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if not proc.startswith("beat"):
            ready = lambda: b" ready." in log.read_bytes()[offset:]  # noqa: E731
            wait_until(ready, 60, f"worker {proc}")

    def start_all(self, procs: tuple[str, ...] = (*QUEUES, "beat")) -> None:
        for proc in procs:
            self.start(proc)

    def kill_child(self, queue: str) -> float:
        """kill -9 the worker's pool child (the process running the task); when (wall clock)."""
        pool = children(self.procs[queue].pid)
        assert pool, f"worker {queue} has no pool child"
        for pid in pool:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return time.time()

    def kill_worker(self, queue: str) -> float:
        """kill -9 the whole worker (main process, pool, their git subprocesses) and restart it,
        as a supervisor would; when it was killed (wall clock)."""
        main = self.procs[queue].pid
        for pid in [main, *descendants(main)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        self.procs[queue].wait(timeout=30)
        self.start(queue)
        return killed_at

    def stop(self, proc: str) -> None:
        process = self.procs.pop(proc)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in [process.pid, *descendants(process.pid)]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(timeout=30)

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)
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
) -> Iterator[System]:
    system = System(name, env, overrides, concurrency)
    try:
        system.start_all(procs)
        yield system
    finally:
        system.close()
