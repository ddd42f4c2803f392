"""Operator overrides, each recorded as an event with who and why: hold and release promotions
of an image, and roll its moving tags back to an earlier tested run."""

from __future__ import annotations

import logging
import uuid

from shared.adapters.lease import Lease
from shared.context import Context
from shared.errors import InvalidInput, StageError
from shared.model.events import PromotionsHeld, PromotionsReleased, RolledBack, RunResumed, TagMove
from shared.model.pipeline import Phase, Stage, Status
from shared.model.projection import ImageState, RunState
from shared.stages import lease_name
from shared.stages.promote import eligible_tags

log = logging.getLogger(__name__)


def hold(ctx: Context, image: str, by: str, reason: str) -> bool:
    """Stop promotions of `image` (checks, builds and tests go on); False if already held."""
    name = ctx.definition(image).name
    _, new = ctx.record(name, lambda s: [] if s.held else [PromotionsHeld(by, reason)])
    return bool(new)


def release(ctx: Context, image: str, by: str, reason: str) -> list[str]:
    """Resume promotions; the tested runs that waited (their promote is sent again, oldest in
    the run order first)."""
    name = ctx.definition(image).name

    def decide(state: ImageState) -> list[PromotionsReleased | RunResumed]:
        if not state.held:
            return []
        waiting = sorted(_waiting(state), key=lambda r: r.order)
        return [PromotionsReleased(by, reason)] + [
            RunResumed(r.run_id, Stage.PROMOTE, "", "released") for r in waiting
        ]

    _, new = ctx.record(name, decide)
    return [e.run_id for e in new if isinstance(e, RunResumed)]


def _waiting(state: ImageState) -> list[RunState]:
    return [
        r for r in state.runs.values() if r.status == Status.RUNNING and r.stage == Phase.TESTED
    ]


def rollback(ctx: Context, image: str, run_id: str, by: str, reason: str) -> tuple[str, ...]:
    """Move every tag that a run later than `run_id` holds, and that run is eligible for, back
    to its tested digest; the tags moved. Recorded before the PUTs; doing it again finishes it."""
    definition = ctx.definition(image)
    registry, repository = ctx.settings.push_registry, definition.spec.target.repository
    if not reason.strip():
        raise InvalidInput(f"{image}: rollback needs a reason")
    owner = f"rollback-{uuid.uuid4().hex}"
    with Lease(ctx.redis, lease_name(definition.name, run_id, Stage.PROMOTE), owner) as held:
        if not held:
            raise StageError(image, "rollback", "a promotion is moving tags; try again shortly")

        def decide(state: ImageState) -> list[RolledBack]:
            target = state.runs.get(run_id)
            if target is None or not target.passed_tests:
                raise StageError(image, "rollback", f"run {run_id} never passed its tests")
            moves = tuple(
                TagMove(tag, state.tags[tag].digest, target.digest)
                for tag in eligible_tags(definition, target)
                if (h := state.holder(tag)) is not None and h.order > target.order
            )
            return [RolledBack(run_id, by, reason, moves)] if moves else []

        ctx.record(definition.name, decide)
        after = ctx.state(definition.name)
        target = after.runs[run_id]
        moved = tuple(t for t, p in after.tags.items() if p.run_id == run_id)
        for tag in moved:
            if ctx.registry.tag_digest(registry, repository, tag) != target.digest:
                ctx.registry.copy_to_tag(registry, repository, target.digest, tag)
        log.warning("%s: rolled back %s to run %s by %s: %s", image, moved, run_id, by, reason)
        return moved
