"""Events before a run: what a check of upstream and of the image's definition found."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseDetected:
    """A (tool version, base digest) pair nobody has built yet; starts run `run_id`."""

    run_id: str
    tool_version: str
    base_image: str
    base_digest: str
    reason: str  # "check", "rebuild" or "forced"


@dataclass(frozen=True)
class ReleaseWaiting:
    """`tool_version`, newer than anything the check may build, is younger than the image's
    min_release_age: the check builds it from `until` (UTC) on, unless it is yanked before."""

    tool_version: str
    uploaded_at: str
    until: str


@dataclass(frozen=True)
class ReleaseWaitEnded:
    """The waiting `tool_version` no longer shows as waiting: `reason` is "old enough" (built
    now), "withdrawn" (yanked or gone from the index: never built) or "superseded" (a newer
    release was built by force; this one is still built once old enough, like any release)."""

    tool_version: str
    reason: str


@dataclass(frozen=True)
class CheckFailed:
    """Checking upstream failed; no run started. `error` names image, stage and next step."""

    error: str
    stage: str = "check"


@dataclass(frozen=True)
class CheckRecovered:
    """A check succeeded again after CheckFailed."""


@dataclass(frozen=True)
class DefinitionInvalid:
    """The image's definition folder is broken: `file` and `field` ("" when no one field is to
    blame, e.g. a TOML syntax error); `error` says what to fix. The image is not checked until
    its folder is fixed; other images go on. Recorded once per distinct error."""

    file: str
    field: str
    error: str


@dataclass(frozen=True)
class DefinitionRepaired:
    """The image's definition loads again after DefinitionInvalid; checks resume."""
