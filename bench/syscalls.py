"""System calls a process makes inside a window: how many (`count`, `perf stat` on the kernel's
syscall tracepoints: counted in the kernel, the process is not slowed down) and how long each
took (`blocked_ms`, `perf trace`).

Needs `perf` (Debian: linux-perf) and root; without them the windows give None and the
benchmark prints "-" for these columns.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ACK_TIMEOUT_S = 10
# perf delivers events from its ring buffers with a delay: wait this long at a window's edges.
SETTLE_S = 0.3


class Counts:
    """The counts of one window, by tracepoint name; None when perf could not count."""

    def __init__(self) -> None:
        self.values: dict[str, int] | None = None

    def get(self, event: str) -> int | None:
        return None if self.values is None else self.values.get(event)


@contextmanager
def count(pid: int, events: Sequence[tuple[str, str]]) -> Iterator[Counts]:
    """Count (tracepoint, filter) events of `pid` while the block runs ("" = no filter).

    perf attaches with its events disabled and is enabled and disabled through its control
    FIFO, each acknowledged, so the window is exactly the block: not perf's start-up.
    """
    counts = Counts()
    if shutil.which("perf") is None:
        yield counts
        return
    with tempfile.TemporaryDirectory(prefix="freshen-perf-") as tmp:
        folder = Path(tmp)
        control, ack = folder / "ctl", folder / "ack"
        os.mkfifo(control)
        os.mkfifo(ack)
        command = ["perf", "stat", "-x", ",", "-o", str(folder / "out.csv"), "--delay=-1"]
        command += ["--control", f"fifo:{control},{ack}", "-p", str(pid)]
        for event, filter_ in events:
            command += ["-e", event] + (["--filter", filter_] if filter_ else [])
        # Read-write ends never block on open, whoever opens first.
        ctl_fd, ack_fd = os.open(control, os.O_RDWR), os.open(ack, os.O_RDWR)
        perf = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            enabled = _command(ctl_fd, ack_fd, perf, "enable")
            yield counts
            if enabled and _command(ctl_fd, ack_fd, perf, "disable"):
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=ACK_TIMEOUT_S)
                counts.values = _parse(folder / "out.csv")
        finally:
            if perf.poll() is None:
                perf.kill()
                perf.wait()
            os.close(ctl_fd)
            os.close(ack_fd)


def _command(ctl_fd: int, ack_fd: int, perf: subprocess.Popen[bytes], word: str) -> bool:
    """Send a control word; True once perf acknowledged it (False if perf gave up)."""
    os.write(ctl_fd, f"{word}\n".encode())
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while time.monotonic() < deadline and perf.poll() is None:
        ready, _, _ = select.select([ack_fd], [], [], 0.1)
        if ready:
            return os.read(ack_fd, 64).startswith(b"ack")
    return False


def _parse(path: Path) -> dict[str, int] | None:
    """perf's CSV (count,unit,event,…); None if an event could not be counted."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 3 or line.startswith("#"):
            continue
        if not fields[0].isdigit():
            return None
        values[fields[2]] = int(fields[0])
    return values or None


class Durations:
    """Milliseconds of each traced call of one window (filled when the window closes)."""

    def __init__(self) -> None:
        self.ms: list[float] | None = None


@contextmanager
def blocked_ms(pid: int, syscall: str, poke: Callable[[], None]) -> Iterator[Durations]:
    """Durations of `syscall` made by the main thread of `pid` (thread id = pid) while the block
    runs, from `perf trace`. `poke` makes that thread call `syscall` once: the window opens
    after a poke has been seen, so perf's attach time is not in it."""
    durations = Durations()
    if shutil.which("perf") is None:
        yield durations
        return
    pattern = re.compile(rf"\(\s*([\d.]+) ms\): [^ ]*/{pid} {syscall}\(")
    seen: list[float] = []
    # perf trace writes its events to stderr, unbuffered.
    command = ["perf", "trace", "-e", syscall, "-p", str(pid)]
    perf = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def read() -> None:
        assert perf.stderr is not None
        for line in perf.stderr:
            if found := pattern.search(line):
                seen.append(float(found.group(1)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while not seen and time.monotonic() < deadline and perf.poll() is None:
            poke()
            time.sleep(0.1)
        attached = bool(seen)
        time.sleep(SETTLE_S)
        start = len(seen)
        yield durations
        time.sleep(SETTLE_S)
        if attached:
            durations.ms = seen[start:]
    finally:
        perf.send_signal(signal.SIGINT)
        try:
            perf.wait(timeout=ACK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
        reader.join(timeout=ACK_TIMEOUT_S)
