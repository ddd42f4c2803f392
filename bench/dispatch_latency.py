"""Detection to build start: from the ReleaseDetected append to the build task starting.

    .venv/bin/python -m bench.dispatch_latency [--quick] [--samples 200]

Real check and build workers (concurrency 1, events on) serve one image whose PyPI project gets
a new release before each sample; the check task finds it, appends ReleaseDetected and sends
the build task. Each sample waits until the build is done, so every detection meets idle
workers. The build is a tiny image (a LABEL on the base) so samples are quick; what it builds
does not change when it starts. Times are wall-clock on this one machine: the ReleaseDetected
event's `at`, the build task's `task-received` (worker main process) and `task-started` (pool
child) Celery events, and the BuildStarted event's `at` (freshen has loaded the run and taken
its lease: the build proper begins).
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import fresh_database, parser, percentile, report
from bench.system import (
    apply_environment,
    define,
    freshen_environment,
    push_base_copy,
    running_workers,
    unique_prefix,
)
from shared import sends
from shared.config import load_settings
from shared.context import Context, build_context
from shared.model import events as ev
from shared.testing.pypi_server import PyPIServer

IMAGE = "latency"
SAMPLE_TIMEOUT_S = 120
HEADERS = ["from ReleaseDetected to", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms"]


class TaskEvents:
    """Collects the build tasks' task-received and task-started Celery events in a thread."""

    def __init__(self) -> None:
        self.received: dict[str, tuple[str, float]] = {}  # task id -> (run id, time)
        self.started: dict[str, float] = {}
        self._receiver: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        from workers.app import app

        def on_received(event: dict[str, Any]) -> None:
            if event.get("name") == "workers.build.build":
                run_id = sends.described(event["args"])["run"]  # args read "image=… run=…"
                self.received[event["uuid"]] = (run_id, float(event["timestamp"]))

        def on_started(event: dict[str, Any]) -> None:
            self.started[event["uuid"]] = float(event["timestamp"])

        handlers = {"task-received": on_received, "task-started": on_started}
        with app.connection_for_read() as connection:
            self._receiver = app.events.Receiver(connection, handlers=handlers)
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        self._ready.wait(30)
        time.sleep(1)  # the receiver's queue is bound once it consumes
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(timeout=10)

    def by_run(self) -> dict[str, tuple[float, float]]:
        """run id -> (received, started) of its build task."""
        return {
            run: (at, self.started[task])
            for task, (run, at) in self.received.items()
            if task in self.started
        }


def one_sample(ctx: Context, pypi: PyPIServer, versions: list[str]) -> str:
    """A new release, one check, and the wait for its build to finish; returns the run id."""
    from beat.schedule import CHECK_TASK
    from workers.app import app

    versions.append(f"1.0.{len(versions)}")
    pypi.set_releases(IMAGE, versions)
    run_id = app.send_task(CHECK_TASK, args=[IMAGE]).get(timeout=SAMPLE_TIMEOUT_S)
    if not run_id:
        raise RuntimeError(f"the check found no new release {versions[-1]}")
    deadline = time.monotonic() + SAMPLE_TIMEOUT_S
    while time.monotonic() < deadline:
        run = ctx.state(IMAGE).runs[run_id]
        if run.status == "failed":
            raise RuntimeError(f"build of run {run_id} failed: {run.error}")
        if run.reached("built"):
            return str(run_id)
        time.sleep(0.05)
    raise RuntimeError(f"build of run {run_id} did not finish in {SAMPLE_TIMEOUT_S} s")


def seconds(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def rows(ctx: Context, run_ids: list[str], tasks: dict[str, tuple[float, float]]) -> list[Any]:
    detected: dict[str, float] = {}
    started: dict[str, float] = {}
    for record in ctx.store.read(IMAGE):
        if isinstance(record.event, ev.ReleaseDetected):
            detected[record.event.run_id] = seconds(record.at)
        elif isinstance(record.event, ev.BuildStarted):
            started[record.event.run_id] = seconds(record.at)
    unseen = [r for r in run_ids if r not in tasks]
    if unseen:  # the task events were not read (their format changed?): no figure, not a gap
        raise RuntimeError(f"no build task events seen for runs {unseen}")
    series = {
        "build task received (worker)": [tasks[r][0] - detected[r] for r in run_ids if r in tasks],
        "build task started (pool child)": [
            tasks[r][1] - detected[r] for r in run_ids if r in tasks
        ],
        "BuildStarted recorded": [started[r] - detected[r] for r in run_ids],
    }
    table = []
    for label, values in series.items():
        ms = [v * 1000 for v in values]
        stats = [percentile(ms, p) for p in (50, 90, 99)] if ms else [0.0] * 3
        table.append([label, len(ms), *stats, max(ms, default=0.0)])
    return table


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--samples", type=int, help="number of detections measured")
    opts = args.parse_args()
    samples = opts.samples or (5 if opts.quick else 200)
    prefix = unique_prefix()
    fresh_database(opts.redis_url)
    with tempfile.TemporaryDirectory(prefix="freshen-bench-") as tmp, PyPIServer() as pypi:
        images = Path(tmp) / "images"
        images.mkdir()
        define(images, IMAGE, pypi.index, push_base_copy(prefix), f"{prefix}/{IMAGE}", tiny=True)
        settings = freshen_environment(opts.redis_url, images)
        apply_environment(settings)
        ctx = build_context(load_settings())
        versions: list[str] = []
        with running_workers(settings, ["check", "build"], Path(tmp)), TaskEvents() as tasks:
            one_sample(ctx, pypi, versions)  # warm-up: first build, first connections
            run_ids = [one_sample(ctx, pypi, versions) for _ in range(samples)]
            time.sleep(1)  # the last task events arrive
        table = rows(ctx, run_ids, tasks.by_run())
    fresh_database(opts.redis_url)
    report("Detection to build start (idle workers)", HEADERS, table)


if __name__ == "__main__":
    main()
