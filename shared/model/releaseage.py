"""The release-age gate (`min_release_age`, like Renovate's minimumReleaseAge), as pure functions.

A release is old enough once its upload time (its earliest file's, on the index) lies at least
`min_release_age` in the past. The check builds the newest release old enough; a newer one that is
too young waits. Upload times never change on an index, so a cached list of them stays right while
the index answers 304, and a waiting release becomes buildable on the check after its time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter

from shared.errors import UpstreamError

# `3d`, `12h`, `90m`, `45s`, `2w`: the short forms image.toml accepts besides ISO 8601 and seconds.
_SHORT_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# pydantic's lax timedelta: ISO 8601 durations (`P3D`, `PT12H`) and numbers of seconds.
_TIMEDELTA = TypeAdapter(timedelta)
DURATION_FORMS = 'a duration like "3d", "12h", "90m", "45s", an ISO 8601 duration or seconds'


def parse_duration(value: object) -> timedelta:
    """A non-negative duration from image.toml; ValueError naming the accepted forms otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_FORMS}")
    if isinstance(value, str) and (short := _SHORT_DURATION.fullmatch(value.strip())):
        return timedelta(seconds=int(short[1]) * _UNIT_S[short[2]])
    try:
        duration = _TIMEDELTA.validate_python(value, strict=False)
    except ValueError:
        raise ValueError(f"expected {DURATION_FORMS}, got {str(value)[:40]!r}") from None
    if duration < timedelta(0):
        raise ValueError("must not be negative")
    return duration


def upload_time(files: Sequence[dict[str, object]]) -> int | None:
    """The release's upload time: its earliest file's `upload_time_iso_8601`, in whole POSIX
    seconds rounded up (never early); None when no file carries a time with a zone."""
    times = []
    for file in files:
        raw = file.get("upload_time_iso_8601")
        if not isinstance(raw, str):
            continue
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            continue
        if parsed.tzinfo is not None:
            times.append(math.ceil(parsed.timestamp()))
    return min(times) if times else None


def iso(posix_s: float) -> str:
    """UTC time as the events write it (seconds precision)."""
    return datetime.fromtimestamp(posix_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Offered:
    """A qualifying release: normalized version and upload time (None when the index gave none)."""

    version: str
    uploaded_s: int | None


@dataclass(frozen=True)
class Offer:
    """What to build now: the newest release old enough ("" when none is), and the newest
    release when it is too young (`waiting`, buildable from `until_s`)."""

    candidate: str
    waiting: Offered | None = None
    until_s: int = 0


def pick(
    offered: Sequence[Offered], min_age_s: float, now_s: float, complete: bool, project: str
) -> Offer | None:
    """The offer for releases listed newest first; None when `offered` is cut off (`complete`
    False) before a release old enough appears. A release without an upload time met before the
    candidate is an UpstreamError: the gate cannot tell its age, so nothing newer is guessed."""
    waiting: Offered | None = None
    for entry in offered:
        if min_age_s <= 0:
            return Offer(entry.version)
        if entry.uploaded_s is None:
            raise UpstreamError(
                f"PyPI project {project}: release {entry.version} has no upload time "
                "(upload_time_iso_8601), so min_release_age cannot be applied; fix the index "
                "or set min_release_age = 0"
            )
        if entry.uploaded_s + min_age_s <= now_s:
            return _offer(entry.version, waiting, min_age_s)
        waiting = waiting or entry
    return _offer("", waiting, min_age_s) if complete else None


def _offer(candidate: str, waiting: Offered | None, min_age_s: float) -> Offer:
    if waiting is None or waiting.uploaded_s is None:
        return Offer(candidate)
    return Offer(candidate, waiting, math.ceil(waiting.uploaded_s + min_age_s))


def encode(offered: Sequence[Offered]) -> str:
    """`version=uploaded,…` (uploaded empty when unknown): compact, for the HTTP cache."""
    return ",".join(f"{o.version}={'' if o.uploaded_s is None else o.uploaded_s}" for o in offered)


def decode(text: str) -> list[Offered]:
    """The inverse of encode; versions are re-validated by whoever uses them."""
    out = []
    for item in text.split(",") if text else []:
        version, _, uploaded = item.partition("=")
        out.append(Offered(version, int(uploaded) if uploaded.isdigit() else None))
    return out
