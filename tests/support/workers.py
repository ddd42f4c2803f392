"""Celery workers as subprocesses for fault tests that scale out: several workers per queue,
each with its own concurrency and Docker Engine (DOCKER_HOST), started at once; and a tap of
the task events they send (which worker ran which task id).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from tests.conftest import for_queue, shared_registry_env
from tests.support.isolated import descendants, settings_from
from tests.support.throwaway import wait_until
from workers.app import celery_config

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
ENGINES = {"e1": "unix:///var/run/docker.sock", "e2": "unix:///run/freshen-docker2.sock"}


@dataclass(frozen=True)
class Worker:
    name: str  # node name prefix and log name, e.g. "build-e2"
    queue: str
    concurrency: int
    engine: str | None = None  # key of ENGINES: the worker's DOCKER_HOST


class Cluster:
    """Celery workers as subprocesses; several per queue, each with its concurrency and engine."""

    def __init__(self, name: str, env: Mapping[str, str], workers: Iterable[Worker]) -> None:
        self.name = name
        self.suffix = uuid.uuid4().hex[:6]
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FRESHEN_") and k != "DOCKER_HOST"
        }
        env = {**env, **shared_registry_env(env)}
        self.env = {**inherited, **env}
        self.workers = {w.name: w for w in workers}
        self.settings = settings_from(env)
        self.app = Celery("freshen-scaleout", set_as_current=False)
        self.app.conf.update(celery_config(self.settings))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (ARTIFACTS / "faults").mkdir(parents=True, exist_ok=True)

    def node(self, worker: str) -> str:
        return f"{worker}@{self.name}-{self.suffix}"

    def engine_of(self, hostname: str) -> str | None:
        """The engine of the worker with this Celery node name."""
        worker = self.workers.get(hostname.split("@", 1)[0])
        return worker.engine if worker is not None else None

    def log_path(self, worker: str) -> Path:
        return ARTIFACTS / "faults" / f"{self.name}-{worker}.log"

    def start(self) -> None:
        """Start every worker at once; wait until each says it is ready."""
        for w in self.workers.values():
            command = [
                sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", w.queue,
                "-n", self.node(w.name), "-c", str(w.concurrency), "-E", "-l", "INFO",
                "--without-mingle", "--without-gossip",
            ]  # fmt: skip
            env = for_queue(self.env, w.queue)  # registry credentials only where it pushes
            if w.engine is not None:
                env["DOCKER_HOST"] = ENGINES[w.engine]
            with self.log_path(w.name).open("wb") as out:
                self.procs[w.name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
        for name in self.workers:
            ready = lambda n=name: b" ready." in self.log_path(n).read_bytes()  # noqa: E731
            wait_until(ready, 90, f"worker {name}")

    def send(self, task: str, *args: str) -> None:
        self.app.send_task(task, args=list(args))

    def close(self) -> None:
        for process in self.procs.values():
            process.terminate()
        for process in self.procs.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for pid in [process.pid, *descendants(process.pid)]:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.wait(timeout=30)
        self.app.close()


class Background:
    """`with` runs `_loop` in a thread until the block ends; `_loop` watches `self._stop`."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name)
        self.failure: BaseException | None = None

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc

    def _work(self) -> None:
        raise NotImplementedError


class TaskTap(Background):
    """Which worker (Celery node name) started each task id, from the workers' task events."""

    def __init__(self, app: Celery) -> None:
        self.hostnames: dict[str, str] = {}
        self._app = app
        super().__init__("task-tap")

    def _record(self, event: dict[str, Any]) -> None:
        if event.get("type") == "task-started" and "uuid" in event:
            self.hostnames[event["uuid"]] = str(event.get("hostname", ""))

    def _work(self) -> None:
        with self._app.connection_for_read() as connection:
            receiver = self._app.events.Receiver(connection, handlers={"*": self._record})
            while not self._stop.is_set():
                with suppress(TimeoutError, OSError):
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
