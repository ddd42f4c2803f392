"""A PyPI JSON payload read as data: its releases checked, judged and ordered (pure functions).

Which releases qualify (PEP 440, with files, not yanked, final unless pre-releases are asked for,
taggable) and in which order; shared/adapters/pypi.py fetches and caches,
shared/model/releaseage.py applies the release-age gate to the result.
"""

from __future__ import annotations

import logging

from packaging.version import Version

from shared.errors import InvalidInput, UpstreamError
from shared.model import releaseage, validate
from shared.model.releaseage import Offer, Offered

log = logging.getLogger(__name__)
# Rejected raw version strings quoted in an error, and how much of each.
QUOTED_REJECTS = 3
QUOTE_CHARS = 40

NOT_PEP440 = "not PEP 440"
NO_FILES = "without files"
YANKED = "yanked"
PRERELEASE = "pre-release"
# An epoch (`1!2.0`) or a local part (`1.0+ubuntu`) cannot be an OCI tag: such a release is
# skipped (with this reason logged), so it never blocks the releases after it.
UNTAGGABLE = "with an epoch or local part"

Releases = dict[str, list[dict[str, object]]]


def quote(value: object) -> str:
    """A raw upstream value made safe to show: truncated, then repr() (control chars escaped)."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:QUOTE_CHARS]) + ("…" if len(text) > QUOTE_CHARS else "")


def malformed(project: str, why: str) -> UpstreamError:
    return UpstreamError(f"PyPI project {project}: malformed answer: {why}")


def checked_releases(payload: object, project: str) -> Releases:
    """The payload's `releases` mapping, with its shape checked."""
    if not isinstance(payload, dict):
        raise malformed(project, f"expected a JSON object, got {type(payload).__name__}")
    releases = payload.get("releases")
    if not isinstance(releases, dict):
        raise malformed(project, "no 'releases' object")
    for raw, files in releases.items():
        if not isinstance(files, list):
            raise malformed(project, f"release {quote(raw)} has no file list")
        if not all(isinstance(f, dict) for f in files):
            raise malformed(project, f"release {quote(raw)} has a file that is not an object")
    return releases


def _judge(raw: object, files: list[dict[str, object]], prereleases: bool) -> Version | str:
    """The parsed version when the release qualifies, else the reason it does not."""
    try:
        parsed = validate.version(raw)
    except InvalidInput:
        return NOT_PEP440
    if not files:
        return NO_FILES
    if all(f.get("yanked") is True for f in files):
        return YANKED
    if not prereleases and (parsed.is_prerelease or parsed.is_devrelease):
        return PRERELEASE
    if parsed.epoch or parsed.local:
        return UNTAGGABLE
    return parsed


def qualified(releases: Releases, project: str, prereleases: bool) -> list[Offered]:
    """The qualifying releases, newest first, each with its upload time."""
    qualified: list[tuple[Version, list[dict[str, object]]]] = []
    rejected: dict[str, list[str]] = {
        NOT_PEP440: [],
        NO_FILES: [],
        YANKED: [],
        PRERELEASE: [],
        UNTAGGABLE: [],
    }
    for raw, files in releases.items():
        verdict = _judge(raw, files, prereleases)
        if isinstance(verdict, Version):
            qualified.append((verdict, files))
        else:
            rejected[verdict].append(raw)
    if qualified:
        if rejected[UNTAGGABLE]:
            log.info(
                "PyPI project %s: skipped %s: an epoch or local part cannot be an OCI tag",
                project, ", ".join(quote(raw) for raw in rejected[UNTAGGABLE][:QUOTED_REJECTS]),
            )  # fmt: skip
        qualified.sort(key=lambda pair: pair[0], reverse=True)
        return [Offered(str(v), releaseage.upload_time(files)) for v, files in qualified]
    if not releases:
        raise UpstreamError(f"PyPI project {project} lists no releases; check the project name")
    counts = ", ".join(f"{len(raws)} {reason}" for reason, raws in rejected.items() if raws)
    examples = [raw for raws in rejected.values() for raw in raws][:QUOTED_REJECTS]
    hint = "" if prereleases else "; allow pre-releases if they are wanted"
    raise UpstreamError(
        f"PyPI project {project} has no usable release among {len(releases)} ({counts}; "
        f"e.g. {', '.join(quote(raw) for raw in examples)}){hint}"
    )


def select_newest(payload: object, project: str, prereleases: bool) -> str:
    """Normalized newest PEP 440 version with files, not yanked, final unless `prereleases`.

    `payload` is the decoded JSON of `<index>/<project>/json`. Raises UpstreamError when it is
    malformed or when no release qualifies; never returns a raw string that did not validate.
    """
    project = validate.pypi_project(project)
    return qualified(checked_releases(payload, project), project, prereleases)[0].version


def select_offer(
    payload: object, project: str, prereleases: bool, min_age_s: float, now_s: float
) -> Offer:
    """The release-age gate's offer for a decoded payload (see releaseage.pick)."""
    project = validate.pypi_project(project)
    offered = qualified(checked_releases(payload, project), project, prereleases)
    offer = releaseage.pick(offered, min_age_s, now_s, complete=True, project=project)
    assert offer is not None  # a complete list always decides
    return offer
