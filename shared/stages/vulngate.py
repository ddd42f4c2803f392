"""The vulnerability gate of the test stage: the candidate's installed Python distributions are
read from its files (nothing in it runs) and looked up while its tests run, so the gate's time
hides behind theirs; the image's policy decides once they pass. Tests that fail are the run's
outcome whatever the gate found; an unreadable index after passing tests retries the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from shared.context import Context
from shared.definitions import VulnerabilitiesSection
from shared.errors import StageError, TransientError
from shared.model.events import Event, StepRecord, TestsFailed, TestsPassed, VulnerabilitiesChecked
from shared.model.pipeline import Phase, Stage, Status
from shared.model.projection import ImageState, RunState
from shared.model.vulns import Lookup, block_message, evaluate

log = logging.getLogger(__name__)
# The failed "command" a blocked run records in TestsFailed.
GATE_COMMAND = "vulnerability gate"


@dataclass(frozen=True)
class Scan:
    """The lookups of one candidate's distributions, or why they could not be read (`warn`)."""

    packages: int
    lookups: tuple[Lookup, ...] = ()
    unreadable: str = ""


def scan(
    ctx: Context, image: str, run_id: str, candidate: str, policy: VulnerabilitiesSection
) -> Scan | None:
    """Look the candidate's distributions up; None when the image's policy is `off`.

    Unreadable data is a TransientError (the stage retries; a run that stays unable fails on
    infrastructure and reconciliation retries it later) under `block`, which fails closed; under
    `warn` it is recorded and the run goes on."""
    if policy.policy == "off":
        return None
    installed = ctx.engine().installed_distributions(candidate)
    try:
        return Scan(len(installed), tuple(ctx.vulns.lookup_all(installed)))
    except TransientError as exc:
        if policy.policy == "warn":
            log.warning("%s: run %s: %s; policy warn: going on", image, run_id, exc)
            return Scan(len(installed), unreadable=str(exc))
        raise TransientError(
            f"{image}: run {run_id} is blocked: the vulnerability data could not be read (policy "
            f"block fails closed: not promoted until it can be read): {exc}"
        ) from None


@contextmanager
def scan_beside(
    ctx: Context, image: str, run_id: str, candidate: str, policy: VulnerabilitiesSection
) -> Iterator[Future[Scan | None]]:
    """`scan` in a thread of its own while the block runs (the tests); the block ends when
    the scan has. Its result (or its error) is only read when the tests passed."""
    with ThreadPoolExecutor(1, thread_name_prefix="vulnerability-gate") as gate:
        yield gate.submit(scan, ctx, image, run_id, candidate, policy)


def checked(run: RunState, found: Scan, policy: VulnerabilitiesSection) -> VulnerabilitiesChecked:
    """The event recording what the gate found and decided."""
    verdict = evaluate(found.lookups, policy)
    summary = verdict.summary
    if found.unreadable:
        summary = f"vulnerability data could not be read ({found.unreadable}); policy warn"
    return VulnerabilitiesChecked(
        run.run_id, run.digest, run.tool_version, policy.policy, found.packages,
        verdict.findings, verdict.no_data, verdict.blocked, found.unreadable, summary,
    )  # fmt: skip


def record_passed(
    ctx: Context,
    image: str,
    run: RunState,
    results: tuple[StepRecord, ...],
    found: Scan | None,
    policy: VulnerabilitiesSection,
) -> None:
    """Record the tests' pass with the gate's outcome (one append); a StageError naming every
    vulnerability that applies and its fixed versions when `block` stops the run."""
    passed = TestsPassed(run.run_id, run.digest, results)
    if found is None:
        _record_unless_done(ctx, image, run.run_id, [passed])
        return
    event = checked(run, found, policy)
    log.info("%s: run %s: %s", image, run.run_id, event.summary)
    if not event.blocked:
        _record_unless_done(ctx, image, run.run_id, [event, passed])
        return
    message = block_message(evaluate(found.lookups, policy), run.tool_version)
    failed = TestsFailed(run.run_id, run.digest, GATE_COMMAND, message, results)
    _record_unless_done(ctx, image, run.run_id, [event, failed])
    raise StageError(image, Stage.TEST, f"run {run.run_id}: {message}")


def _record_unless_done(ctx: Context, image: str, run_id: str, events: Sequence[Event]) -> None:
    """Append `events` together unless the run already has its test outcome (a redelivery)."""

    def decide(state: ImageState) -> list[Event]:
        run = state.runs.get(run_id)
        if run is None or run.status != Status.RUNNING or run.reached(Phase.TESTED):
            return []
        return list(events)

    ctx.record(image, decide)
