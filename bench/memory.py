"""Resident memory of benchmark processes, read from /proc: now (VmRSS) and at peak (VmHWM)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a prefork worker and its pool processes)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


@dataclass(frozen=True)
class Memory:
    """One process's resident memory (kB): now and the most it ever held."""

    pid: int
    rss_kb: int
    peak_kb: int

    @classmethod
    def of(cls, pid: int) -> Memory:
        return cls(pid, _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM"))


def tree_memory(pid: int) -> list[Memory]:
    """Memory of each process of the tree under `pid` (those still running)."""
    found = []
    for current in process_tree(pid):
        try:
            found.append(Memory.of(current))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def own_memory() -> Memory:
    """This process (the benchmark, with the PyPI stand-in and the proxy on its threads)."""
    return Memory.of(os.getpid())


def memory_rows(
    size: int, first: list[Memory], last: list[Memory], name: str
) -> list[list[object]]:
    """A row per process of a tree: resident memory after the first and the last cycle."""
    after = {m.pid: m for m in last}
    return [
        [
            size,
            name if n == 0 else f"{name} pool",
            str(m.pid),
            m.rss_kb / 1024,
            after[m.pid].rss_kb / 1024,
            after[m.pid].peak_kb / 1024,
        ]
        for n, m in enumerate(first)
        if m.pid in after
    ]
