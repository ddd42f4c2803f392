"""Promote: point the release tags at exactly the tested digest, then commit the versions file.

Crash-consistent: the plan (tag, from digest, to digest) is recorded before the first manifest
PUT, and a resumed promotion rolls the same plan forward. Before each PUT the registry is asked
where the tag points now; a tag the registry holds at a run later in the order is left alone.
"""

from __future__ import annotations

import json
import logging

from shared.adapters.lease import Lease
from shared.context import Context
from shared.definitions import ImageDefinition
from shared.errors import StageError
from shared.model import tagpolicy, validate
from shared.model.events import (
    Promoted,
    PromotionPlanned,
    PromotionStarted,
    RunCompleted,
    TagMove,
    VersionsCommitted,
)
from shared.model.pipeline import Phase, Stage, Status
from shared.model.projection import ImageState, RunState
from shared.stages import find_run, lease_name, record_attempt, record_once
from shared.stages.build import cleanup_candidate

log = logging.getLogger(__name__)
STAGE = Stage.PROMOTE
# How long a promote waits for another promote of the same image before trying again.
BUSY_RETRY_S = 5


class PromoteBusy(Exception):
    """Another run of this image is moving tags right now; try again shortly."""


def eligible_tags(definition: ImageDefinition, run: RunState) -> list[str]:
    """Every tag a build of this run is eligible for under the image's tag policy."""
    target = definition.spec.target
    version = validate.version(run.tool_version)
    return tagpolicy.release_tags(
        version, run.os_id, run.os_version, minor=target.minor, latest=target.latest, os=target.os
    )


def plan_tags(definition: ImageDefinition, run: RunState, state: ImageState) -> tagpolicy.TagPlan:
    """The tags this run gets: those no run later in the order holds."""
    current = {tag: h.order for tag in state.tags if (h := state.holder(tag)) is not None}
    return tagpolicy.plan(run.order, eligible_tags(definition, run), current)


def _plan(ctx: Context, definition: ImageDefinition, run: RunState, attempt: str) -> RunState:
    """Record the start and the plan (once); the run as it is after."""
    image, run_id = definition.name, run.run_id
    record_attempt(ctx, image, run_id, STAGE, PromotionStarted(run_id, attempt))

    def decide(state: ImageState) -> list[PromotionPlanned]:
        current = state.runs[run_id]
        if current.plan or current.reached(Phase.PROMOTED) or current.status != Status.RUNNING:
            return []
        plan = plan_tags(definition, current, state)
        moves = tuple(
            TagMove(t, state.tags[t].digest if t in state.tags else "", current.digest)
            for t in plan.move
        )
        return [PromotionPlanned(run_id, attempt, moves, plan.keep)]

    ctx.record(image, decide)
    return find_run(ctx.state(image), run_id, STAGE)


def _roll_forward(ctx: Context, definition: ImageDefinition, run: RunState) -> Promoted:
    """Apply the recorded plan, tag by tag, against what the registry really holds."""
    registry, repository = ctx.settings.push_registry, definition.spec.target.repository
    state = ctx.state(definition.name)
    moved: list[str] = []
    kept = [t for t in eligible_tags(definition, run) if t not in {m.tag for m in run.plan}]
    for move in run.plan:
        found = ctx.registry.tag_digest(registry, repository, move.tag)
        holder = state.tested_run_with(found) if found else None
        if found != run.digest and holder is not None and holder.order > run.order:
            log.info("%s: %s is held by later run %s; kept", definition.name, move.tag, holder)
            kept.append(move.tag)
            continue
        if found not in (run.digest, move.from_digest):
            log.warning(
                "%s: %s pointed at %s, not %s as planned (moved outside freshen); moving it",
                definition.name, move.tag, found, move.from_digest or "nothing",
            )  # fmt: skip
        if found != run.digest:
            ctx.registry.copy_to_tag(registry, repository, run.digest, move.tag)
        moved.append(move.tag)
    return Promoted(run.run_id, run.digest, run.tool_version, tuple(moved), tuple(kept))


def versions_file(image: str, run: RunState, latest: bool) -> dict[str, str]:
    """The per-release record, and the image's versions file when `latest` is this run."""
    doc = {
        "image": image,
        "version": run.tool_version,
        "base": run.base_image,
        "base_digest": run.base_digest,
        "os": f"{run.os_id}{run.os_version}",
        "digest": run.digest,
        "tags": run.tags,
        "run_id": run.run_id,
    }
    text = json.dumps(doc, indent=2) + "\n"
    files = {f"versions/{image}/{run.tool_version}.json": text}
    if latest:
        files[f"versions/{image}.json"] = text
    return files


def points_latest(state: ImageState, run: RunState) -> bool:
    """Whether the image's versions file should record this run: `latest` points at it (or,
    for images without `latest`, no promoted run is later in the order)."""
    if tagpolicy.LATEST in state.tags:
        return state.tags[tagpolicy.LATEST].run_id == run.run_id
    later = [r for r in state.runs.values() if r.tags and r.order > run.order]
    return not later


def _commit_versions(ctx: Context, image: str, run: RunState) -> None:
    if ctx.git is None or run.commit:
        return
    latest = points_latest(ctx.state(image), run)
    git_tag = f"{image}-{run.tool_version}-{run.os_id}{run.os_version}-{run.run_id[:8]}"
    message = f"{image} {run.tool_version} on {run.base_image} ({run.os_id}{run.os_version})"
    commit = ctx.git.publish(run.run_id, versions_file(image, run, latest), git_tag, message)
    event = VersionsCommitted(run.run_id, commit, git_tag)
    record_once(ctx, image, run.run_id, lambda r: bool(r.commit), event)


def promote(ctx: Context, image: str, run_id: str, attempt: str) -> str:
    """Promote a tested run: "promoted", "skipped" (finished or failed already) or "held"
    (promotions of the image are held; the run waits until released).

    One promote per image at a time: PromoteBusy when another holds the image's lease.
    """
    definition = ctx.definition(image)
    state = ctx.state(image)
    run = find_run(state, run_id, STAGE)
    if run.status != Status.RUNNING:
        return "skipped"
    if not run.reached(Phase.TESTED):
        raise StageError(image, STAGE, f"run {run_id} has not passed its tests; not promoted")
    if state.held and not run.reached(Phase.PROMOTING):
        return "held"
    with Lease(ctx.redis, lease_name(image, run_id, STAGE), attempt) as held:
        if not held:
            raise PromoteBusy(f"{image}: another promote is moving tags")
        if not run.reached(Phase.PROMOTED):
            run = _plan(ctx, definition, run, attempt)
            event = _roll_forward(ctx, definition, run)
            record_once(ctx, image, run_id, lambda r: r.reached(Phase.PROMOTED), event)
            log.info("%s: run %s: %s → %s (kept %s)", image, run_id, event.tags, run.digest,
                     event.kept)  # fmt: skip
        _commit_versions(ctx, image, find_run(ctx.state(image), run_id, STAGE))
        record_once(ctx, image, run_id, lambda r: r.status == Status.DONE, RunCompleted(run_id))
    cleanup_candidate(ctx, definition, find_run(ctx.state(image), run_id, STAGE))
    return "promoted"
