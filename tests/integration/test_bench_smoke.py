"""Each benchmark's `--quick` run works end to end on the real services and prints its table.

Nothing is timed here (the figures are in BENCHMARKS.md); this only keeps the benchmarks
runnable. They use their own Redis database (11), not the suite's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Benchmark module → the title of the table it prints.
TITLES = {
    "eventlog": "Event log: append and replay",
    "check_cost": "Idle check cost",
    "dispatch_latency": "Detection to build start",
    "overhead": "Orchestration overhead",
    "fsync": "Cost of appendfsync always per run",
    "recovery": "Recovery from a whole-worker kill -9",
}
RUN_TIMEOUT_S = 170
# The recovery run waits for a lease to lapse and three runs to finish after the kill.
LONGER_S = {"recovery": 420}


@pytest.mark.timeout(max(RUN_TIMEOUT_S, *LONGER_S.values()) + 10)
@pytest.mark.parametrize("name", sorted(TITLES))
def test_quick_run_prints_its_table(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=LONGER_S.get(name, RUN_TIMEOUT_S),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith(f"### {TITLES[name]}"), result.stdout[-2000:]
    rows = [line for line in lines if line.startswith("| ")]
    assert len(rows) >= 2, result.stdout[-2000:]  # a header and at least one row
    assert any(line.startswith("machine: ") for line in lines)
