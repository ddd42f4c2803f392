"""Which events notify and what a person reads: pure functions on plain data."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from shared.model import events as ev
from shared.model.aggregate import RunState
from shared.model.pipeline import Cause
from shared.notify.messages import (
    NOTIFIABLE,
    Facts,
    Message,
    Notice,
    check_failing,
    message,
)

DIGEST = "sha256:" + "d" * 64
OLD = "sha256:" + "0" * 64
BASE = "sha256:" + "b" * 64
EVERYTHING = frozenset(NOTIFIABLE)
RUN = RunState("r7", "1.36.2", "python:3.12-slim", BASE, "check", "2026-12-01T00:00:00Z")


def notice(event: Any, image: str = "awscli", stream_id: str = "1700000000000-3") -> Notice:
    data = asdict(event) if not isinstance(event, dict) else event
    kind = type(event).__name__ if not isinstance(event, dict) else data.pop("__type")
    return Notice(kind, image, "2026-12-01T10:00:00Z", stream_id, data)


def facts(run: RunState | None = RUN, infra_retries: int = 3) -> Facts:
    return Facts(run, infra_retries)


def test_a_failed_test_names_the_command_its_output_and_how_to_rebuild() -> None:
    tail = "upload failed: ./x to s3://b/x\nAn error occurred (AccessDenied)"
    failed = ev.TestsFailed("r7", DIGEST, "s3 cp local s3://", tail)
    found = message(notice(failed), facts(), EVERYTHING)
    assert found is not None and found.level == "failure"
    assert found.key == "1700000000000-3"  # the event's id: its idempotency key
    assert found.title == "freshen: awscli 1.36.2 failed in test"
    assert found.body.splitlines() == [
        "image: awscli",
        "version: 1.36.2",
        "base: python:3.12-slim@sha256:bbbbbbbbbbbb",
        "run: r7",
        "stage: test (definite)",
        f"digest: {DIGEST}",
        "failing command: s3 cp local s3://",
        "output (tail):",
        "upload failed: ./x to s3://b/x",
        "An error occurred (AccessDenied)",
        "rebuild: freshen rebuild awscli --version 1.36.2 --force",
        "event: 1700000000000-3 at 2026-12-01T10:00:00Z",
    ]


def test_a_failed_build_shows_its_error_and_control_characters_are_shown_not_obeyed() -> None:
    found = message(notice(ev.BuildFailed("r7", "pip failed\x1b[2K")), facts(), EVERYTHING)
    assert found is not None
    assert "error:\npip failed\\x1b[2K" in found.body
    assert found.title == "freshen: awscli 1.36.2 failed in build"


def test_an_infrastructure_failure_notifies_only_once_freshen_stops_retrying() -> None:
    lost = ev.BuildFailed("r7", "worker lost", Cause.INFRASTRUCTURE)
    assert message(notice(lost), facts(), EVERYTHING) is None  # reconciliation retries it
    last = message(notice(lost), facts(replace(RUN, retries=3)), EVERYTHING)
    assert last is not None and "stage: build (infrastructure)" in last.body


def test_a_promotion_lists_each_tag_moved_from_where_and_the_digest() -> None:
    run = replace(
        RUN,
        plan=[ev.TagMove("1.36.2", "", DIGEST), ev.TagMove("1.36", OLD, DIGEST)],
    )
    event = ev.Promoted("r7", DIGEST, "1.36.2", ("1.36.2", "1.36"), kept=("latest",))
    found = message(notice(event), facts(run), EVERYTHING)
    assert found is not None and found.level == "success"
    assert found.title == "freshen: awscli 1.36.2 promoted"
    lines = found.body.splitlines()
    assert f"digest: {DIGEST}" in lines
    assert "  1.36.2: new -> sha256:dddddddddddd" in lines
    assert "  1.36: sha256:000000000000 -> sha256:dddddddddddd" in lines
    assert "kept (newer there): latest" in lines
    assert "rebuild: freshen rebuild awscli --version 1.36.2 --force" in lines


def test_an_audit_notifies_drift_found_not_drift_ended() -> None:
    drift = ev.TagFinding("latest", DIGEST, OLD, "moved")
    found = message(notice(ev.AuditRecorded((drift,))), facts(None), EVERYTHING)
    assert found is not None and found.level == "warning"
    assert "latest: moved, log sha256:dddddddddddd, registry sha256:000000000000" in found.body
    assert "see: freshen audit awscli" in found.body
    assert message(notice(ev.AuditRecorded(())), facts(None), EVERYTHING) is None


def test_only_chosen_event_types_notify() -> None:
    failed = notice(ev.TestsFailed("r7", DIGEST, "aws --version", "boom"))
    assert message(failed, facts(), frozenset({"Promoted"})) is None
    assert message(failed, facts(), frozenset({"TestsFailed"})) is not None
    started = notice(ev.BuildStarted("r7", "a1"))
    assert message(started, facts(), EVERYTHING - {"BuildStarted"}) is None


def test_check_failed_is_timed_not_notified_per_event() -> None:
    first = notice(ev.CheckFailed("awscli: check failed: PyPI answered 503"))
    assert message(first, facts(None), EVERYTHING) is None
    found = check_failing(first, 1860.0)
    assert found.key == "check-1700000000000-3"
    assert found.title == "freshen: awscli: checks failing for 31 min"
    assert "error: awscli: check failed: PyPI answered 503" in found.body


def test_an_event_type_this_freshen_cannot_decode_yet_is_shown_field_by_field() -> None:
    """A newer freshen's event: chosen by name, formatted from its stored data."""
    data = {"__type": "ImageScanned", "run_id": "r7", "critical": 2, "ids": ["CVE-1"]}
    found = message(notice(data), facts(), EVERYTHING | {"ImageScanned"})
    assert found is not None
    assert found.title == "freshen: awscli: ImageScanned"
    assert "critical: 2" in found.body and "ids: ['CVE-1']" in found.body
    assert "rebuild: freshen rebuild awscli --version 1.36.2 --force" in found.body


FLAW = ev.VulnerabilityFinding(
    "PYSEC-2099-1", "vulntool", "2.0.0", ("2.0.3", "2.1.0"), link="https://osv.dev/PYSEC-2099-1"
)
KNOWN = ev.VulnerabilityFinding("GHSA-aaaa-bbbb-cccc", "six", "1.0", (), ignored="not reachable")


def test_a_promotion_with_known_vulnerabilities_names_each_its_fix_and_the_digest() -> None:
    warned = ev.VulnerabilitiesChecked("r7", DIGEST, "1.36.2", "warn", 12, (FLAW, KNOWN))
    found = message(notice(warned), facts(), EVERYTHING)
    assert found is not None and found.level == "warning"
    assert found.title == "freshen: awscli 1.36.2: 1 known vulnerability"
    assert "PYSEC-2099-1 in vulntool 2.0.0: fixed in 2.0.3, 2.1.0" in found.body
    assert f"digest: {DIGEST}" in found.body and "run: r7" in found.body
    assert "GHSA-aaaa" not in found.body  # ignored, with its reason, in the event only
    unreadable = replace(warned, findings=(), unreadable="PyPI answered HTTP 503")
    told = message(notice(unreadable), facts(), EVERYTHING)
    assert told is not None and "could not be read: PyPI answered HTTP 503" in told.body


def test_a_clean_scan_or_a_blocked_run_sends_no_vulnerability_message() -> None:
    """A blocked run is told once, by its TestsFailed (the gate's ids are its output)."""
    clean = ev.VulnerabilitiesChecked("r7", DIGEST, "1.36.2", "block", 12, (KNOWN,))
    blocked = ev.VulnerabilitiesChecked("r7", DIGEST, "1.36.2", "block", 12, (FLAW,), blocked=True)
    assert message(notice(clean), facts(), EVERYTHING) is None
    assert message(notice(blocked), facts(), EVERYTHING) is None


def test_a_long_output_tail_is_cut_from_the_front() -> None:
    failed = ev.TestsFailed("r7", DIGEST, "s3 ls", "x" * 5000 + "THE END")
    found = message(notice(failed), facts(), EVERYTHING)
    assert found is not None and found.body.count("x") < 1600 and "THE END" in found.body


@pytest.mark.parametrize("level", ["failure", "success"])
def test_a_message_survives_its_json(level: str) -> None:
    original = Message("1-0", "awscli", "Promoted", level, "t", "b\nc")
    assert Message.from_json(original.to_json()) == original
