"""Real Celery workers as subprocesses, for the end-to-end tests, the fault suite and the
benchmarks: started as `scripts/run.sh` starts them (prefork, task events on, one queue each),
each with its own node name, concurrency, settings, Docker Engine and log file; then pinged
until they answer, killed with their whole process tree, restarted, and stopped.

Only the workers of the queues that push get the registry credentials (`for_queue`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from shared.testing.services import for_queue

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90  # a worker on a loaded machine imports and connects within this
STOP_TIMEOUT_S = 30  # a worker asked to stop (warm shutdown) ends within this, or is killed


@dataclass(frozen=True)
class Worker:
    """One worker process: its name (node-name prefix and log name, e.g. "build", "check2",
    "build-e2"), the queue it serves and how."""

    name: str
    queue: str
    concurrency: int = 1
    docker_host: str | None = None  # its own Docker Engine (DOCKER_HOST); None: inherited
    env: Mapping[str, str] = field(default_factory=dict)  # settings of this worker only

    @classmethod
    def named(cls, name: str, concurrency: int = 1, **env: str) -> Worker:
        """A worker of the queue its name starts with (`check2`: a second `check` worker)."""
        return cls(name, name.rstrip("0123456789"), concurrency, env=env)


def children(pid: int) -> list[int]:
    """The processes `pid` started (a worker's pool children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a worker's pool children and theirs)."""
    return [p for child in children(pid) for p in (child, *descendants(child))]


def kill_tree(pid: int) -> None:
    """kill -9 a process and everything below it (found first: orphans would be re-parented)."""
    for each in [pid, *descendants(pid)]:
        with suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


class Workers:
    """Celery worker subprocesses of one test or benchmark, all on the broker of `app`.

    `env` is every worker's environment (this process's, without its FRESHEN_* variables, then
    `env`); `host` makes the node names (`<name>@<host>`) unique on a shared broker; `logs` is
    the folder of the log files (`<log_prefix><name>.log`, appended to on a restart).
    """

    def __init__(
        self,
        app: Celery,
        env: Mapping[str, str],
        logs: Path,
        host: str,
        log_prefix: str = "",
        loglevel: str = "INFO",
        options: Sequence[str] = (),  # more `celery worker` options, e.g. --without-gossip
    ) -> None:
        self.app = app
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
        self.env = {**inherited, **env}
        self.logs = logs
        self.host = host
        self.log_prefix = log_prefix
        self.loglevel = loglevel
        self.options = tuple(options)
        self.workers: dict[str, Worker] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def node(self, name: str) -> str:
        return f"{name}@{self.host}"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{self.log_prefix}{name}.log"

    def worker_of(self, node: str) -> Worker | None:
        """The worker with this Celery node name (as task events give it)."""
        return self.workers.get(node.split("@", 1)[0])

    def start(self, *workers: Worker) -> None:
        """Start the workers without waiting (`wait_ready`); a worker started before (killed or
        stopped since) starts again under its node name and appends to its log."""
        for worker in workers:
            again = worker.name in self.workers
            self.workers[worker.name] = worker
            command = [
                sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                "-Q", worker.queue, "-n", self.node(worker.name), "-c", str(worker.concurrency),
                "--pool", "prefork", "-E", "-l", self.loglevel, *self.options,
            ]  # fmt: skip
            env = for_queue({**self.env, **worker.env}, worker.queue)
            if worker.docker_host is not None:
                env["DOCKER_HOST"] = worker.docker_host
            with self.log_path(worker.name).open("ab" if again else "wb") as log:
                self.processes[worker.name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )

    def wait_ready(self, *names: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until each named worker (every started one when none named) answers a ping."""
        waiting = {self.node(n) for n in names or self.processes}
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            for reply in self.app.control.ping(destination=sorted(waiting), timeout=1.0) or []:
                waiting -= set(reply)
            for name, process in self.processes.items():
                if self.node(name) in waiting and process.poll() is not None:
                    raise RuntimeError(
                        f"worker {name} exited with {process.returncode}: see {self.log_path(name)}"
                    )
        if waiting:
            raise RuntimeError(f"workers {sorted(waiting)} did not answer after {timeout_s} s")

    def kill(self, name: str) -> float:
        """kill -9 the whole worker: main process, pool, their subprocesses; when (wall clock)."""
        process = self.processes[name]
        kill_tree(process.pid)
        killed_at = time.time()
        process.wait(timeout=STOP_TIMEOUT_S)
        return killed_at

    def kill_pool(self, name: str) -> float:
        """kill -9 the worker's pool children (the processes running tasks); when (wall clock)."""
        pool = children(self.processes[name].pid)
        if not pool:
            raise RuntimeError(f"worker {name} has no pool child")
        for pid in pool:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return time.time()

    def restart(self, name: str) -> None:
        """Start a killed worker again, as a supervisor would, and wait for it."""
        self.start(self.workers[name])
        self.wait_ready(name)

    def stop(self, *names: str) -> None:
        """Warm shutdown of the named workers (every one when none named); kill -9 the whole
        tree of one that does not stop in time."""
        stopping = {n: self.processes.pop(n) for n in names or list(self.processes)}
        for process in stopping.values():
            process.terminate()
        for process in stopping.values():
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.wait(timeout=STOP_TIMEOUT_S)
