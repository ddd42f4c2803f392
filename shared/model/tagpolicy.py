"""Which tags a tested build gets, and which of them may move: pure functions on plain data.

Every moving tag (`latest`, `X.Y`, `X.Y.Z`, `X.Y.Z-<os><os version>`) only ever moves forward in
one order: runs are ordered by tool version, then by when their inputs were detected (a newer
base of the same release beats an older one). A run that is not the newest still gets the tags
no later run holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from packaging.version import Version

from shared.model import validate
from shared.model.aggregate import order_key

__all__ = ["LATEST", "Order", "TagPlan", "order_key", "plan", "release_tags"]

LATEST = "latest"
# A run's place in the order: (tool version, position of its ReleaseDetected in the log).
Order = tuple[Version, int]


@dataclass(frozen=True)
class TagPlan:
    """Tags to point at the tested digest, and tags left alone because a later run holds them."""

    move: tuple[str, ...]
    keep: tuple[str, ...]


def release_tags(
    version: Version, os_id: str, os_version: str, *, minor: bool, latest: bool, os: bool
) -> list[str]:
    """All tags a build of `version` is eligible for, most specific first."""
    release = str(version)  # the exact release; validate.tag rejects epochs and local parts
    tags = [release]
    if os:
        tags.append(f"{release}-{os_id}{os_version}")
    if minor and not version.is_prerelease:
        tags.append(f"{version.major}.{version.minor}")
    if latest and not version.is_prerelease:
        tags.append(LATEST)
    return [validate.tag(t) for t in tags]


def plan(run: Order, tags: list[str], current: Mapping[str, Order]) -> TagPlan:
    """Split `tags` into those to move and those to keep, given tag → order of the run it
    points at now: a tag moves only to a run later in the order."""
    move = tuple(t for t in tags if t not in current or current[t] < run)
    keep = tuple(t for t in tags if t not in move)
    return TagPlan(move, keep)


def may_move(run: Order, holder: Order | None) -> bool:
    """Whether a tag held by `holder` (None: unheld or unknown digest) may move to `run`."""
    return holder is None or holder < run
