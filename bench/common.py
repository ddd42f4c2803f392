"""What every benchmark shares: services (shared.testing.services: REGISTRY, PULL_REGISTRY,
registry_credentials), the Redis database it owns, tables and statistics."""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import redis

from shared.testing.services import LOCAL_BASE
from shared.testing.services import PULL_REGISTRY as PULL_REGISTRY
from shared.testing.services import REGISTRY as REGISTRY
from shared.testing.services import registry_credentials as registry_credentials

ROOT = Path(__file__).resolve().parents[1]
# Benchmarks own this Redis database and flush it; the test suite uses 9 and 10.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
# Databases that belong to the test suite or other people: never flushed by a benchmark.
FOREIGN_DATABASES = frozenset({0, 9, 10, 12})
# The local Debian + Python base (scripts/base-image.sh); benchmarks push copies of it.
BASE_IMAGE = LOCAL_BASE


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="a small smoke run")
    args.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"Redis database the benchmark owns and flushes (default {DEFAULT_REDIS_URL})",
    )
    return args


def fresh_database(url: str) -> redis.Redis:
    """A client of the benchmark's own database, emptied first."""
    client = redis.Redis.from_url(url)
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    if db in FOREIGN_DATABASES:
        raise SystemExit(f"refusing to flush Redis database {db}: pick one the benchmark owns")
    client.flushdb()
    return client


def clean_freshen_environment() -> None:
    """Drop FRESHEN_* variables of the calling shell: the benchmark sets its own."""
    for name in [k for k in os.environ if k.startswith("FRESHEN_")]:
        del os.environ[name]


def machine() -> str:
    """Cores, memory, kernel and Python of this machine, for the report."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return (
        f"{os.cpu_count()} cores, {pages / 2**30:.1f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), nearest-rank on sorted values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable in a terminal) under a `### title` line."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [f"### {title}", ""]
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def report(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print the benchmark's table with the machine it ran on."""
    print(table(title, headers, rows))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"machine: {machine()}; load average at the end (1, 5, 15 min): {load}\n", flush=True)
