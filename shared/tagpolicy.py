"""Which tags a tested build gets, and which of them may move: pure functions on plain data.

`X.Y.Z` and `X.Y.Z-<os><os version>` always take the newest tested build of that release (a new
base digest under the same release moves them). `X.Y` and `latest` only move forward: never to
a lower version than the one they point at now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from packaging.version import Version

from shared import validate

LATEST = "latest"


@dataclass(frozen=True)
class TagPlan:
    """Tags to point at the tested digest, and tags left alone because they point higher."""

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


def is_forward_only(tag: str, version: Version) -> bool:
    """`latest` and `X.Y` move only forward; the exact-release tags follow rebuilds."""
    return tag == LATEST or tag == f"{version.major}.{version.minor}"


def plan(version: Version, tags: list[str], current: Mapping[str, str]) -> TagPlan:
    """Split `tags` into those to move and those to keep, given tag → version they point at."""
    move: list[str] = []
    keep: list[str] = []
    for tag in tags:
        pointed = current.get(tag)
        if is_forward_only(tag, version) and pointed and Version(pointed) > version:
            keep.append(tag)
        else:
            move.append(tag)
    return TagPlan(tuple(move), tuple(keep))
