"""The registry audit: does every tag the log knows point where the log says?

Per tag: in agreement; in flight (a recorded promotion plan is moving it right now); moved by
someone else (to a digest that passed a test, but not where the log says); missing; or pointing
at a digest that never passed a test. Beat runs it every `audit_interval_s` and records the
findings as an AuditRecorded event when they change, so `status` shows drift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from shared.config import read_registry
from shared.context import Context
from shared.model.events import AuditRecorded, TagFinding
from shared.model.pipeline import Phase, Status
from shared.model.projection import ImageState

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    AGREES = "agrees"
    IN_FLIGHT = "in-flight"
    MOVED = "moved"
    MISSING = "missing"
    UNTESTED = "untested"


# Verdicts that are not drift.
FINE = frozenset({Verdict.AGREES, Verdict.IN_FLIGHT})


@dataclass(frozen=True)
class AuditReport:
    image: str
    findings: tuple[TagFinding, ...]  # one per tag, sorted by tag

    @property
    def drift(self) -> tuple[TagFinding, ...]:
        return tuple(f for f in self.findings if f.verdict not in FINE)


def in_flight(state: ImageState) -> dict[str, set[str]]:
    """Tag → digests that a recorded, unfinished promotion plan may have moved it to."""
    moving: dict[str, set[str]] = {}
    for run in state.runs.values():
        if run.status == Status.RUNNING and run.stage == Phase.PROMOTING:
            for move in run.plan:
                moving.setdefault(move.tag, set()).add(move.to_digest)
    return moving


def classify(state: ImageState, tag: str, expected: str, found: str) -> Verdict:
    """The verdict for one tag: `expected` from the log ("" unknown), `found` ("" missing)."""
    if found == expected:
        return Verdict.AGREES
    if found in in_flight(state).get(tag, set()):
        return Verdict.IN_FLIGHT
    if not found:
        return Verdict.MISSING
    return Verdict.MOVED if state.tested_run_with(found) else Verdict.UNTESTED


def audit_state(ctx: Context, state: ImageState) -> AuditReport:
    """Ask the registry for every tag the log knows (or a plan is moving) of one image."""
    definition = ctx.definition(state.name)
    # The check worker runs the audit without registry credentials: it reads the pull registry.
    registry, repository = read_registry(ctx.settings), definition.spec.target.repository
    expected = {tag: pointed.digest for tag, pointed in state.tags.items()}
    for tag in in_flight(state):
        expected.setdefault(tag, "")
    findings = []
    for tag in sorted(expected):
        found = ctx.registry.tag_digest(registry, repository, tag) or ""
        verdict = classify(state, tag, expected[tag], found)
        findings.append(TagFinding(tag, expected[tag], found, verdict.value))
    return AuditReport(state.name, tuple(findings))


def audit_image(ctx: Context, image: str, record: bool = True) -> AuditReport:
    """Audit one image; with `record`, append AuditRecorded when its drift changed."""
    report = audit_state(ctx, ctx.state(image))
    if record:
        drift = report.drift
        ctx.record(image, lambda s: [] if tuple(s.drift) == drift else [AuditRecorded(drift)])
        for finding in drift:
            log.warning("%s: audit: %s is %s (log %s, registry %s)", image, finding.tag,
                        finding.verdict, finding.expected or "-", finding.found or "-")  # fmt: skip
    return report
