"""Check: the newest release upstream and the base image's digest; start a run when new.

With a release-age gate (`min_release_age`) the newest release old enough is built, and a newer
one too young is recorded once as ReleaseWaiting; it is built by the first check after its time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

from packaging.version import Version

from shared.constants import LAST_CHECK_KEY
from shared.context import Context
from shared.definitions import DefinitionError, ImageDefinition
from shared.errors import FreshenError, InvalidInput
from shared.model import releaseage, runs, validate
from shared.model.events import (
    CheckFailed,
    CheckRecovered,
    DefinitionInvalid,
    DefinitionRepaired,
    Event,
    ReleaseDetected,
    ReleaseWaitEnded,
    ReleaseWaiting,
)
from shared.model.projection import ImageState
from shared.model.releaseage import Offer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """What upstream offers now: a validated tool version ("" when no release is old enough
    yet), the base image's digest and what the release-age gate holds back."""

    tool_version: str
    base_digest: str
    offer: Offer | None = None


def read_upstream(
    ctx: Context,
    definition: ImageDefinition,
    version: str | None,
    force: bool = False,
    now_s: float | None = None,
) -> Upstream:
    """Ask PyPI (unless `version` is given) and the base image's registry. A given `version`
    younger than the image's min_release_age is refused unless `force`."""
    source = definition.spec.source
    now_s = time.time() if now_s is None else now_s
    age_s = source.min_release_age_s
    offer = None
    if version is None:
        offer = ctx.pypi.offer(source.index, source.pypi, source.prereleases, age_s, now_s)
        tool_version = str(validate.release(offer.candidate)) if offer.candidate else ""
    else:
        tool_version = str(validate.release(version))  # a given version is never empty
        if age_s > 0 and not force:
            _refuse_young(ctx, definition, tool_version, now_s)
    base_digest = validate.digest(ctx.registry.head_digest(definition.base))
    return Upstream(tool_version, base_digest, offer)


def _refuse_young(ctx: Context, definition: ImageDefinition, version: str, now_s: float) -> None:
    source = definition.spec.source
    until_s = ctx.pypi.uploaded(source.index, source.pypi, version) + source.min_release_age_s
    if until_s > now_s:
        raise InvalidInput(
            f"{definition.name}: rebuild refused: release {version} is younger than "
            f"min_release_age and waits until {releaseage.iso(until_s)}; rebuild with "
            "force to build it now"
        )


def decide_wait(state: ImageState, upstream: Upstream) -> list[Event]:
    """ReleaseWaiting when the release held back changed; ReleaseWaitEnded when none is held
    back any more. A release that already has a run (built by force) does not wait."""
    offer = upstream.offer
    young = offer.waiting if offer else None
    if young and any(r.tool_version == young.version for r in state.runs.values()):
        young = None
    if young is None or young.uploaded_s is None or offer is None:
        if state.waiting is None:
            return []
        version = state.waiting.tool_version
        return [ReleaseWaitEnded(version, _wait_end_reason(state, version, upstream))]
    until = releaseage.iso(offer.until_s)
    shown = state.waiting
    if shown and (shown.tool_version, shown.until) == (young.version, until):
        return []
    return [ReleaseWaiting(young.version, releaseage.iso(young.uploaded_s), until)]


def _wait_end_reason(state: ImageState, version: str, upstream: Upstream) -> str:
    if version == upstream.tool_version:
        return "old enough"
    runs_after = [r for r in state.runs.values() if Version(r.tool_version) > Version(version)]
    if any(r.reason == "forced" for r in runs_after):
        return "superseded"  # a newer release was built by force (status shows no wait)
    return "withdrawn"


def decide_run(
    state: ImageState, definition: ImageDefinition, upstream: Upstream, reason: str, force: bool
) -> list[Event]:
    """ReleaseDetected when these inputs have no run yet (or `force`); clears a check error."""
    found = [
        r
        for r in state.runs.values()
        if r.tool_version == upstream.tool_version and r.base_digest == upstream.base_digest
    ]
    out = repaired(state)
    out += [CheckRecovered()] if state.check_error and reason == "check" else []
    if reason == "check":
        out += decide_wait(state, upstream)
    if not upstream.tool_version or (found and not force):
        return out
    run_id = runs.run_id(state.name, upstream.tool_version, upstream.base_digest, len(found))
    base = definition.spec.base.image
    out.append(ReleaseDetected(run_id, upstream.tool_version, base, upstream.base_digest, reason))
    return out


def repaired(state: ImageState) -> list[Event]:
    """DefinitionRepaired when the log still shows the image's folder as broken."""
    return [DefinitionRepaired()] if state.definition_error else []


def record_broken(
    ctx: Context, image: str, exc: DefinitionError, known: ImageState | None = None
) -> None:
    """DefinitionInvalid, once per distinct error: the image waits for its folder's fix."""
    error = f"{image}: definition broken, not checked until fixed: {exc}"
    log.error("%s", error)
    invalid = DefinitionInvalid(str(exc.file), exc.field, error)
    ctx.record(image, lambda s: [] if s.definition_error == error else [invalid], known)


def start_run(
    ctx: Context,
    definition: ImageDefinition,
    upstream: Upstream,
    reason: str,
    force: bool,
    known: ImageState | None = None,
) -> tuple[str, bool]:
    """The run id for these inputs, and whether this call started it (False: it existed)."""
    state, new = ctx.record(
        definition.name, lambda s: decide_run(s, definition, upstream, reason, force), known
    )
    for event in new:
        if isinstance(event, ReleaseDetected):
            log.info(
                "%s: release %s on base %s: run %s",
                definition.name,
                event.tool_version,
                event.base_digest,
                event.run_id,
            )
            return event.run_id, True
    if not upstream.tool_version:
        return "", False
    existing = state.run_for(upstream.tool_version, upstream.base_digest)
    assert existing is not None  # decide_run only skips when a run exists
    return existing.run_id, False


class Outcome(NamedTuple):
    """What one check found: whether upstream answered, and the run it started (or None)."""

    answered: bool
    run_id: str | None


def check(ctx: Context, image: str) -> str | None:
    """One check of `image`: the id of the run it started, or None (see check_one)."""
    outcome = check_one(ctx, image)
    if outcome.answered:
        stamp_checked(ctx, [image])
    return outcome.run_id


def check_one(ctx: Context, image: str, known: ImageState | None = None) -> Outcome:
    """One check of `image`, deciding on `known` first when given (Context.record).

    Every upstream problem (bad answer, unreachable, invalid version, a release the age gate
    cannot date) is recorded as CheckFailed, once per distinct error; the next check tries again.
    """
    definition = ctx.catalog.lookup(validate.image_name(image))
    if definition is None:  # its folder was removed after beat sent this check
        log.info("%s: not checked: its folder is gone", image)
        return Outcome(False, None)
    if isinstance(definition, DefinitionError):
        record_broken(ctx, image, definition, known)
        return Outcome(False, None)
    try:
        upstream = read_upstream(ctx, definition, None)
    except FreshenError as exc:
        record_check_failed(ctx, image, str(exc), known)
        return Outcome(False, None)
    run_id, started = start_run(ctx, definition, upstream, "check", False, known)
    return Outcome(True, run_id if started else None)


def record_check_failed(
    ctx: Context, image: str, why: str, known: ImageState | None = None
) -> None:
    """CheckFailed naming the image and why, once per distinct error."""
    error = f"{image}: check failed: {why}. The next check tries again."
    log.warning("%s", error)
    failed: list[Event] = [CheckFailed(error)]
    ctx.record(image, lambda s: repaired(s) + ([] if s.check_error == error else failed), known)


def stamp_checked(ctx: Context, images: list[str]) -> None:
    """When these images' upstreams last answered a check (for /metrics), in one write."""
    if images:
        now = f"{time.time():.3f}"
        ctx.redis.hset(LAST_CHECK_KEY, mapping=dict.fromkeys(images, now))
