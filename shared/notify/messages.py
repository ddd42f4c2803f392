"""Which events notify and what a person reads: pure functions of the event and what the
image's log says about its run.

Formatters are found by event type name (FORMATTERS), and work on the event's stored data (a
dict), so an event type this freshen does not decode yet can still be chosen and shown: a type
without a formatter of its own gets `generic`. Adding one is one function and one line here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from shared.model.aggregate import RunState
from shared.model.eventcodec import EVENT_TYPES
from shared.model.pipeline import Cause
from shared.secrets import neutralize

# The longest output tail a message carries (chat services cut long messages themselves).
TAIL_CHARS = 1500
SHORT = 19  # "sha256:" and 12 hex digits: enough to tell digests apart in a chat line


@dataclass(frozen=True)
class Notice:
    """One event read from the global stream, as stored: type name, image, data."""

    type: str
    image: str
    at: str
    stream_id: str  # in the global stream: the idempotency key
    data: Mapping[str, Any]
    position: int = -1  # in the image's stream


@dataclass(frozen=True)
class Facts:
    """What the image's log says at the notice: its run (None for image events), and how many
    infrastructure retries freshen makes before a run stays failed."""

    run: RunState | None
    infra_retries: int


@dataclass(frozen=True)
class Message:
    """A notification: `key` is its idempotency key (the event's stream id), `level` one of
    failure, success, warning, info."""

    key: str
    image: str
    kind: str
    level: str
    title: str
    body: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Message:
        return cls(**json.loads(text))


Formatter = Callable[[Notice, Facts], "Message | None"]


def rebuild_hint(image: str, version: str) -> str:
    version_arg = f" --version {version}" if version else ""
    return f"rebuild: freshen rebuild {image}{version_arg} --force"


def _lines(notice: Notice, facts: Facts, *middle: str) -> str:
    run = facts.run
    version = run.tool_version if run else ""
    head = [f"image: {notice.image}"]
    if run:
        head += [f"version: {version}", f"base: {run.base_image}@{run.base_digest[:SHORT]}"]
        head.append(f"run: {run.run_id}")
    tail = [rebuild_hint(notice.image, version), f"event: {notice.stream_id} at {notice.at}"]
    return neutralize("\n".join([*head, *middle, *tail]))


def _version(facts: Facts) -> str:
    return f" {facts.run.tool_version}" if facts.run else ""


def run_failed(notice: Notice, facts: Facts) -> Message | None:
    """A stage failed for good: its own outcome, or infrastructure once retries ran out."""
    data = notice.data
    retried = facts.run.retries if facts.run else 0
    if data.get("cause") == Cause.INFRASTRUCTURE.value and retried < facts.infra_retries:
        return None  # reconciliation retries it; the person is told if that fails too
    stage = str(data.get("stage", ""))
    detail = [f"stage: {stage} ({data.get('cause', Cause.DEFINITE.value)})"]
    if digest := data.get("digest") or (facts.run.digest if facts.run else ""):
        detail.append(f"digest: {digest}")
    if command := data.get("failed_command"):
        tail = str(data.get("output_tail", ""))[-TAIL_CHARS:]
        detail += [f"failing command: {command}", "output (tail):", tail]
    else:
        detail += ["error:", str(data.get("error", ""))[-TAIL_CHARS:]]
    title = f"freshen: {notice.image}{_version(facts)} failed in {stage}"
    body = _lines(notice, facts, *detail)
    return Message(notice.stream_id, notice.image, notice.type, "failure", title, body)


def promoted(notice: Notice, facts: Facts) -> Message | None:
    data = notice.data
    plan = {m.tag: m.from_digest for m in facts.run.plan} if facts.run else {}
    moves = [
        f"  {tag}: {(plan.get(tag) or 'new')[:SHORT]} -> {str(data['digest'])[:SHORT]}"
        for tag in data.get("tags", ())
    ]
    kept = [f"kept (newer there): {', '.join(data['kept'])}"] if data.get("kept") else []
    detail = [f"digest: {data['digest']}", "tags moved:", *moves, *kept]
    title = f"freshen: {notice.image} {data.get('tool_version', '')} promoted"
    body = _lines(notice, facts, *detail)
    return Message(notice.stream_id, notice.image, notice.type, "success", title, body)


def drift_found(notice: Notice, facts: Facts) -> Message | None:
    findings = notice.data.get("findings", ())
    if not findings:
        return None  # drift ended
    rows = [
        f"  {f['tag']}: {f['verdict']}, log {f['expected'][:SHORT] or '-'}, "
        f"registry {f['found'][:SHORT] or '-'}"
        for f in findings
    ]
    detail = [
        "the registry's tags differ from the log:",
        *rows,
        f"see: freshen audit {notice.image}",
    ]
    title = f"freshen: {notice.image}: {len(findings)} tag(s) drifted from the log"
    body = _lines(notice, facts, *detail)
    return Message(notice.stream_id, notice.image, notice.type, "warning", title, body)


def vulnerabilities_found(notice: Notice, facts: Facts) -> Message | None:
    """A candidate promoted with known vulnerabilities (policy warn), or whose vulnerability
    data could not be read under warn. A blocked run is told by its TestsFailed, whose output
    names the same ids and fixes; a clean scan tells nothing."""
    data = notice.data
    applying = [f for f in data.get("findings", ()) if not f.get("ignored")]
    unreadable = str(data.get("unreadable", ""))
    if data.get("blocked") or not (applying or unreadable):
        return None
    rows = [
        f"  {f['id']} in {f['package']} {f['installed']}: "
        + (f"fixed in {', '.join(f['fixed_in'])}" if f.get("fixed_in") else "no fix yet")
        + (f" ({f['link']})" if f.get("link") else "")
        for f in applying
    ]
    if unreadable:
        rows.append(f"  the vulnerability data could not be read: {unreadable[:TAIL_CHARS]}")
    detail = [
        f"policy: {data.get('policy', '')} (promoted anyway)",
        f"digest: {data.get('digest', '')}",
        "vulnerabilities:",
        *rows,
        "fix: upgrade the package in the Dockerfile, or ignore the id with a reason in "
        "image.toml [vulnerabilities]",
    ]
    what = f"{len(applying)} known vulnerabilit{'y' if len(applying) == 1 else 'ies'}"
    title = f"freshen: {notice.image} {data.get('tool_version', '')}: {what}"
    body = _lines(notice, facts, *detail)
    return Message(notice.stream_id, notice.image, notice.type, "warning", title, body)


def generic(notice: Notice, facts: Facts) -> Message | None:
    """Any other chosen event: its fields, one a line."""
    detail = [f"{name}: {str(value)[:TAIL_CHARS]}" for name, value in notice.data.items()]
    title = f"freshen: {notice.image}: {notice.type}"
    return Message(notice.stream_id, notice.image, notice.type, "warning", title,
                   _lines(notice, facts, *detail))  # fmt: skip


def check_failing(notice: Notice, failing_s: float) -> Message:
    """CheckFailed, once the image's checks have failed `failing_s` (the threshold) without
    recovering; `notice` is the first failure of that stretch, its data the latest error."""
    minutes = f"{failing_s / 60:.0f} min" if failing_s >= 60 else f"{failing_s:.0f} s"
    body = neutralize(
        f"image: {notice.image}\nfailing since: {notice.at} ({minutes})\n"
        f"error: {notice.data.get('error', '')}\nsee: freshen status {notice.image}\n"
        f"event: {notice.stream_id}"
    )
    title = f"freshen: {notice.image}: checks failing for {minutes}"
    return Message(f"check-{notice.stream_id}", notice.image, notice.type, "warning", title, body)


FORMATTERS: dict[str, Formatter] = {
    "BuildFailed": run_failed,
    "TestsFailed": run_failed,
    "PromotionFailed": run_failed,
    "Promoted": promoted,
    "AuditRecorded": drift_found,
    "VulnerabilitiesChecked": vulnerabilities_found,
}
# CheckFailed is timed, not formatted per event (check_failing).
TIMED = frozenset({"CheckFailed"})
# Event type names FRESHEN_NOTIFY_EVENTS may hold.
NOTIFIABLE = frozenset(EVENT_TYPES) | frozenset(FORMATTERS)


def message(notice: Notice, facts: Facts, chosen: frozenset[str]) -> Message | None:
    """The message for `notice`, or None when it does not notify (not chosen, timed, or its
    formatter finds nothing to tell)."""
    if notice.type not in chosen or notice.type in TIMED:
        return None
    return FORMATTERS.get(notice.type, generic)(notice, facts)
