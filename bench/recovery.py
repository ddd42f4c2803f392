"""Recovery from a whole-worker kill: from `kill -9` of a stage's worker (main process, pool and
their subprocesses) to that stage running again, per stage, with default settings (the goal of
issue 6: under 90 s).

    .venv/bin/python -m bench.recovery [--quick] [--rounds 3]

Each round is the fault suite's worker-loss scenario (shared/testing/workerloss.py, also
tests/faults/test_worker_loss.py): three runs sit inside build (a `RUN` that sleeps), test (a
script that sleeps) and promote (a versions-file push the git remote holds) at once; the build,
test and promote workers are killed together and restarted at once, as a supervisor would.
Every reconcile, lease and time-limit setting is at its default (reconcile every 30 s; a lease
lives 30 s and is renewed every 10 s): the killed attempt's message stays unacknowledged for an
hour, so the stage runs again only once its lease has lapsed and the reconciler has re-sent it.
"Running again" is the stage's task starting on the replacement worker (its Celery
`task-started` event); the table also gives the kill to `RunResumed` (the re-send) and to the
run's last event. `--quick` is one round with reconcile every 5 s (not the default settings:
its figures say nothing about the goal).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import clean_freshen_environment, fresh_database, median, parser, report
from bench.system import unique_prefix
from shared.testing import workerloss
from shared.testing.system import running
from shared.testing.taskevents import TaskEvents

HEADERS = [
    "stage",
    "samples",
    "kill → running again, s",
    "median s",
    "kill → resumed, median s",
    "kill → done, median s",
    "goal",
    "met?",
]
QUICK_RECONCILE_S = "5"


def rounds_of(count: int, redis_url: str, quick: bool) -> list[workerloss.Recovery]:
    """`count` rounds of the worker-loss scenario on one system; every stage's recovery."""
    recoveries = []
    with tempfile.TemporaryDirectory(prefix="freshen-bench-") as tmp:
        root = Path(tmp)
        workerloss.define_images(root, unique_prefix())
        settings = {"reconcile_interval_s": QUICK_RECONCILE_S} if quick else {}
        env = workerloss.environment(root, redis_url, **settings)
        with running("recovery", env, logs=root / "logs") as system, TaskEvents(system.app) as tap:
            for _ in range(count):
                recoveries += workerloss.kill_and_recover(
                    system, workerloss.stage_runs(system, root), tap
                )
        if tap.failure is not None:
            raise SystemExit(f"the task events were lost: {tap.failure!r}")
    for r in recoveries:  # a sample only counts when the kill hit the stage and it came back
        if not r.inside or r.status != "done" or r.running_s is None or r.resumed_s is None:
            raise SystemExit(
                f"{r.stage}: the kill missed the stage or the run did not recover: {r}"
            )
    return recoveries


def row(stage: str, recoveries: list[workerloss.Recovery]) -> list[object]:
    running = [r.running_s for r in recoveries if r.running_s is not None]
    resumed = [r.resumed_s for r in recoveries if r.resumed_s is not None]
    each = ", ".join(f"{s:.1f}" for s in running)
    goal = workerloss.GOAL_S
    met = "yes" if max(running) < goal else "no"
    done = median([r.done_s for r in recoveries])
    return [stage, len(running), each, median(running), median(resumed), done, f"< {goal:g} s", met]


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--rounds", type=int, help="kills per stage (default 3; --quick: 1)")
    opts = args.parse_args()
    clean_freshen_environment()
    fresh_database(opts.redis_url)
    try:
        recoveries = rounds_of(opts.rounds or (1 if opts.quick else 3), opts.redis_url, opts.quick)
    finally:
        fresh_database(opts.redis_url)
    rows = [row(s, [r for r in recoveries if r.stage == s]) for s in workerloss.STAGES]
    settings = "--quick: reconcile every 5 s" if opts.quick else "default settings"
    report(f"Recovery from a whole-worker kill -9 ({settings})", HEADERS, rows)


if __name__ == "__main__":
    main()
