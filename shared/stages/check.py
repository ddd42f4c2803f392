"""Check: the newest release upstream and the base image's digest; start a run when new."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared import runs, validate
from shared.context import Context
from shared.definitions import ImageDefinition
from shared.errors import FreshenError
from shared.events import CheckFailed, CheckRecovered, Event, ReleaseDetected
from shared.projection import ImageState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """What upstream offers now: a validated tool version and the base image's digest."""

    tool_version: str
    base_digest: str


def read_upstream(ctx: Context, definition: ImageDefinition, version: str | None) -> Upstream:
    """Ask PyPI (unless `version` is given) and the base image's registry."""
    source = definition.spec.source
    if version is None:
        version = ctx.pypi.newest_release(source.index, source.pypi, source.prereleases)
    tool_version = str(validate.release(version))
    base_digest = validate.digest(ctx.registry.head_digest(definition.base))
    return Upstream(tool_version, base_digest)


def decide_run(
    state: ImageState, definition: ImageDefinition, upstream: Upstream, reason: str, force: bool
) -> list[Event]:
    """ReleaseDetected when these inputs have no run yet (or `force`); clears a check error."""
    found = [
        r
        for r in state.runs.values()
        if r.tool_version == upstream.tool_version and r.base_digest == upstream.base_digest
    ]
    out: list[Event] = [CheckRecovered()] if state.check_error and reason == "check" else []
    if found and not force:
        return out
    run_id = runs.run_id(state.name, upstream.tool_version, upstream.base_digest, len(found))
    base = definition.spec.base.image
    out.append(ReleaseDetected(run_id, upstream.tool_version, base, upstream.base_digest, reason))
    return out


def start_run(
    ctx: Context, definition: ImageDefinition, upstream: Upstream, reason: str, force: bool
) -> tuple[str, bool]:
    """The run id for these inputs, and whether this call started it (False: it existed)."""
    state, new = ctx.record(
        definition.name, lambda s: decide_run(s, definition, upstream, reason, force)
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
    existing = state.run_for(upstream.tool_version, upstream.base_digest)
    assert existing is not None  # decide_run only skips when a run exists
    return existing.run_id, False


def check(ctx: Context, image: str) -> str | None:
    """One check of `image`: the id of the run it started, or None.

    Every upstream problem (bad answer, unreachable, invalid version) is recorded as
    CheckFailed, once per distinct error; the next check tries again.
    """
    definition = ctx.definition(image)
    try:
        upstream = read_upstream(ctx, definition, None)
    except FreshenError as exc:
        error = f"{image}: check failed: {exc}. The next check tries again."
        log.warning("%s", error)
        ctx.record(image, lambda s: [] if s.check_error == error else [CheckFailed(error)])
        return None
    run_id, started = start_run(ctx, definition, upstream, "check", force=False)
    return run_id if started else None
