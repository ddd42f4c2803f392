"""Promote: point the release tags at exactly the tested digest, then commit the versions file."""

from __future__ import annotations

import json
import logging

from shared import tagpolicy, validate
from shared.context import Context
from shared.definitions import ImageDefinition
from shared.errors import StageError
from shared.events import (
    Promoted,
    PromotionStarted,
    RunCompleted,
    VersionsCommitted,
)
from shared.lease import Lease
from shared.projection import ImageState, RunState
from shared.stages import find_run, lease_name, record_attempt, record_once

log = logging.getLogger(__name__)
STAGE = "promote"
# How long a promote waits for another promote of the same image before retrying later.
BUSY_RETRY_S = 5


class PromoteBusy(Exception):
    """Another run of this image is moving tags right now; try again shortly."""


def plan_tags(definition: ImageDefinition, run: RunState, state: ImageState) -> tagpolicy.TagPlan:
    """The tags this run gets, leaving `latest` and `X.Y` alone when they point higher."""
    target = definition.spec.target
    version = validate.version(run.tool_version)
    tags = tagpolicy.release_tags(
        version, run.os_id, run.os_version, minor=target.minor, latest=target.latest, os=target.os
    )
    current = {tag: pointed.tool_version for tag, pointed in state.tags.items()}
    return tagpolicy.plan(version, tags, current)


def versions_file(image: str, run: RunState) -> dict[str, str]:
    """The versions file committed to git for a promoted run."""
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
    return {f"versions/{image}.json": json.dumps(doc, indent=2) + "\n"}


def _move_tags(ctx: Context, definition: ImageDefinition, run: RunState, attempt: str) -> None:
    image, run_id = definition.name, run.run_id
    record_attempt(ctx, image, run_id, STAGE, PromotionStarted(run_id, attempt))
    plan = plan_tags(definition, run, ctx.state(image))
    repository = definition.spec.target.repository
    for tag in plan.move:
        ctx.registry.copy_to_tag(ctx.settings.push_registry, repository, run.digest, tag)
    event = Promoted(run_id, run.digest, run.tool_version, plan.move, plan.keep)
    record_once(ctx, image, run_id, lambda r: r.reached("promoted"), event)
    log.info("%s: run %s: %s → %s (kept %s)", image, run_id, plan.move, run.digest, plan.keep)


def _commit_versions(ctx: Context, image: str, run: RunState) -> None:
    if ctx.git is None or run.commit:
        return
    git_tag = f"{image}-{run.tool_version}-{run.os_id}{run.os_version}-{run.run_id[:8]}"
    message = f"{image} {run.tool_version} on {run.base_image} ({run.os_id}{run.os_version})"
    commit = ctx.git.publish(run.run_id, versions_file(image, run), git_tag, message)
    event = VersionsCommitted(run.run_id, commit, git_tag)
    record_once(ctx, image, run.run_id, lambda r: bool(r.commit), event)


def promote(ctx: Context, image: str, run_id: str, attempt: str) -> bool:
    """Promote a tested run; False when it had nothing to do (finished or failed already).

    One promote per image at a time: PromoteBusy when another holds the image's lease.
    """
    definition = ctx.definition(image)
    run = find_run(ctx.state(image), run_id, STAGE)
    if run.status != "running":
        return False
    if not run.reached("tested"):
        raise StageError(image, STAGE, f"run {run_id} has not passed its tests; not promoted")
    limit = ctx.settings.promote_time_limit_s
    with Lease(ctx.redis, lease_name(image, run_id, STAGE), attempt, limit) as held:
        if not held:
            raise PromoteBusy(f"{image}: another promote is moving tags")
        if not run.reached("promoted"):
            _move_tags(ctx, definition, run, attempt)
        _commit_versions(ctx, image, find_run(ctx.state(image), run_id, STAGE))
        record_once(ctx, image, run_id, lambda r: r.status == "done", RunCompleted(run_id))
    return True
