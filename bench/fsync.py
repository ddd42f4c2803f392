"""What `appendfsync always` costs per run: the same tiny build → test → promote through real
workers on one throw-away Redis started from deploy/redis.conf (the shipped configuration), with
only the fsync policy switched (CONFIG SET appendfsync) before each run: the same process, AOF,
workers and connections for every policy. Rounds rotate which policy goes first.

    .venv/bin/python -m bench.fsync [--quick] [--rounds 11] [--policies always,everysec,no]
                                    [--idle-s 30] [--data-dir /var/tmp]

Per run: seconds from rebuild() to RunCompleted; Redis's fdatasync calls and write() calls on
its AOF file (perf stat on the syscall tracepoints: Redis 7.0 counts neither in INFO); the
milliseconds its main thread, the one that answers clients, spent in fdatasync (perf trace;
`everysec` fsyncs on a background thread instead); bytes appended to the AOF (INFO
persistence). Then the same counts while the workers idle, per minute, and this disk's own
latency of a small append + fdatasync in the data folder, which prices `always` on other disks.
The data folder must be on a real disk (not tmpfs: /var/tmp, not /tmp).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import syscalls
from bench.common import median, percentile, report
from bench.overhead import UNUSED_INDEX, freshen_round
from bench.redis_server import ThrowawayRedis
from bench.system import (
    apply_environment,
    define,
    freshen_environment,
    push_base_copy,
    running_workers,
    unique_prefix,
)

POLICIES = ("always", "everysec", "no")
# The policy the others are compared with: Redis's default.
REFERENCE = "everysec"
IMAGE, VERSION = "tiny", "1.0.0"
FDATASYNC = "syscalls:sys_enter_fdatasync"
WRITE = "syscalls:sys_enter_write"
HEADERS = [
    "appendfsync",
    "runs",
    "s/run median",
    f"ratio to {REFERENCE}",
    f"paired difference to {REFERENCE} s (median)",
    "fdatasync/run",
    "ms Redis blocked in fdatasync/run",
    "AOF write()s/run",
    "AOF kB/run",
    "idle fdatasync/min",
    "idle AOF write()s/min",
]


@dataclass(frozen=True)
class Sample:
    """One window on one policy: seconds, syscall counts and the milliseconds Redis's main
    thread spent in fdatasync (None: perf unavailable), AOF bytes."""

    seconds: float
    fdatasyncs: int | None
    blocked_ms: float | None
    aof_writes: int | None
    aof_bytes: int


class Subject:
    """The throw-away Redis under test and what the benchmark reads from it."""

    def __init__(self, server: ThrowawayRedis, client: redis.Redis) -> None:
        self.server, self.client = server, client

    def measure(self, policy: str, window: Callable[[], float]) -> Sample:
        """Switch to `policy`, then count around `window` (which returns its own seconds)."""
        events = [(FDATASYNC, ""), (WRITE, f"fd == {self._aof_fd()}")]
        with syscalls.blocked_ms(self.server.pid, "fdatasync", self._poke) as durations:
            self.client.config_set("appendfsync", policy)
            before = self._aof_size()
            with syscalls.count(self.server.pid, events) as counts:
                seconds = window()
            written = self._aof_size() - before
        blocked = None if durations.ms is None else sum(durations.ms)
        return Sample(seconds, counts.get(FDATASYNC), blocked, counts.get(WRITE), written)

    def _poke(self) -> None:
        """One write that Redis fsyncs at once on its main thread (perf trace's start signal)."""
        self.client.config_set("appendfsync", "always")
        self.client.incr("freshen-bench:fsync-poke")

    def _aof_size(self) -> int:
        return int(self.client.info("persistence")["aof_current_size"])

    def _aof_fd(self) -> int:
        """The descriptor of the AOF file Redis appends to now (it changes after a rewrite)."""
        fds = Path(f"/proc/{self.server.pid}/fd")
        for fd in fds.iterdir():
            if os.readlink(fd).endswith(".incr.aof"):
                return int(fd.name)
        raise RuntimeError("redis-server has no incremental AOF file open: appendonly off?")


def disk_fdatasync_ms(folder: Path, samples: int) -> list[float]:
    """Milliseconds of one 64-byte append + fdatasync, in the Redis data folder."""
    path = folder / "fdatasync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            os.write(fd, b"x" * 64)
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return times


def rounds_of_runs(
    subject: Subject, run: Callable[[], float], policies: Sequence[str], rounds: int
) -> dict[str, list[Sample]]:
    """One untimed warm-up run per policy, then `rounds` rounds, each policy once per round."""
    for policy in policies:
        subject.measure(policy, run)
    samples: dict[str, list[Sample]] = {p: [] for p in policies}
    for round_ in range(rounds):
        shift = round_ % len(policies)
        for policy in [*policies[shift:], *policies[:shift]]:
            samples[policy].append(subject.measure(policy, run))
    return samples


def _per(values: Sequence[int | None], scale: float = 1.0) -> float | str:
    known = [v for v in values if v is not None]
    if len(known) != len(values) or not known:
        return "-"
    value = median(known) * scale
    return int(value) if value == int(value) else value


def _ms(values: Sequence[float | None]) -> float | str:
    known = [v for v in values if v is not None]
    return median(known) if len(known) == len(values) and known else "-"


def rows(
    runs: dict[str, list[Sample]], idle: dict[str, Sample], idle_s: float
) -> list[list[object]]:
    reference = REFERENCE if REFERENCE in runs else next(iter(runs))
    ref_seconds = [s.seconds for s in runs[reference]]
    table: list[list[object]] = []
    for policy, samples in runs.items():
        seconds = [s.seconds for s in samples]
        paired = [a - b for a, b in zip(seconds, ref_seconds, strict=True)]
        per_minute = 60 / idle_s
        table.append(
            [
                policy,
                len(samples),
                median(seconds),
                median(seconds) / median(ref_seconds),
                median(paired),
                _per([s.fdatasyncs for s in samples]),
                _ms([s.blocked_ms for s in samples]),
                _per([s.aof_writes for s in samples]),
                median([s.aof_bytes for s in samples]) / 1000,
                _per([idle[policy].fdatasyncs], per_minute),
                _per([idle[policy].aof_writes], per_minute),
            ]
        )
    return table


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--quick", action="store_true", help="a small smoke run")
    args.add_argument("--rounds", type=int, help="timed runs per policy")
    args.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    args.add_argument("--idle-s", type=float, help="idle window per policy, seconds")
    args.add_argument("--data-dir", default="/var/tmp", help="where the Redis files go (a disk)")
    opts = args.parse_args()
    rounds = opts.rounds or (1 if opts.quick else 11)
    idle_s = opts.idle_s or (1.0 if opts.quick else 30.0)
    policies = opts.policies.split(",")
    prefix = unique_prefix()
    with tempfile.TemporaryDirectory(prefix="freshen-bench-fsync-", dir=opts.data_dir) as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        define(images, IMAGE, UNUSED_INDEX, push_base_copy(prefix), f"{prefix}/{IMAGE}", True)
        server = ThrowawayRedis(Path(tmp) / "redis")
        subject = Subject(server, server.start())
        shipped = subject.client.config_get("appendfsync")["appendfsync"]
        try:
            settings = freshen_environment(server.url, images)
            apply_environment(settings)
            from workers.app import context

            with running_workers(settings, ["build", "test", "promote"], Path(tmp)):
                runs = rounds_of_runs(
                    subject, lambda: freshen_round(context(), IMAGE, VERSION), policies, rounds
                )
                idle = {p: subject.measure(p, lambda: _sleep(idle_s)) for p in policies}
            disk_ms = disk_fdatasync_ms(server.folder, 20 if opts.quick else 500)
        finally:
            server.stop()
    report("Cost of appendfsync always per run", HEADERS, rows(runs, idle, idle_s))
    print(
        f"deploy/redis.conf ships appendfsync {shipped}. "
        f"This disk ({opts.data_dir}): a 64-byte append + fdatasync takes median "
        f"{median(disk_ms):.3f} ms, p90 {percentile(disk_ms, 90):.3f} ms ({len(disk_ms)} samples)."
    )


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    main()
