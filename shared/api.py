"""The Python-shell API: `from shared.api import rebuild, status, events, replay, audit`.

>>> rebuild("awscli")                    # a run for what upstream offers now
>>> rebuild("awscli", version="1.46.2")  # a given release
>>> rebuild("awscli", force=True)        # rebuild even if these inputs were built before
>>> rebuild("awscli", version="1.46.3", force=True)  # build now, however young (min_release_age)
>>> status("awscli")                     # tags, drift, holds and recent runs
>>> audit("awscli")                      # the registry's tags against the log
>>> hold("awscli", "bad release upstream")   # stop promotions; release("awscli", "...") resumes
>>> rollback("awscli", run_id, "1.46.3 breaks s3 cp")  # tags back to an earlier tested run
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field

from shared.errors import UpstreamError
from shared.model import projection, releaseage, validate
from shared.model.events import Recorded, TagFinding
from shared.model.projection import ImageState, RunState, TagState, Waiting
from shared.stages import overrides
from shared.stages.audit import AuditReport, audit_image
from shared.stages.check import Upstream, read_upstream, start_run

RECENT_RUNS = 10


def rebuild(image: str, version: str | None = None, force: bool = False) -> str:
    """Start (or find) the run for `image` at `version` (default: newest) on the current base.

    Returns the run id. Without `force`, inputs that already have a run return that run, and a
    `version` younger than the image's min_release_age is refused (the error says until when);
    without `version`, the newest release old enough is built.
    """
    from workers.app import context
    from workers.base import dispatch

    ctx = context()
    definition = ctx.definition(image)
    upstream = read_upstream(ctx, definition, version, force)
    if not upstream.tool_version:
        raise UpstreamError(f"{definition.name}: rebuild refused: {_no_release(upstream)}")
    reason = "forced" if force else "rebuild"
    run_id, started = start_run(ctx, definition, upstream, reason, force)
    if started:
        dispatch("build", definition.name, run_id)
    return run_id


def _no_release(upstream: Upstream) -> str:
    young = upstream.offer.waiting if upstream.offer else None
    if young is None or upstream.offer is None:
        return "no release is old enough yet (min_release_age)"
    until = releaseage.iso(upstream.offer.until_s)
    return (
        f"no release is old enough yet: {young.version} waits until {until}; rebuild with "
        f"version {young.version} and force to build it now"
    )


@dataclass(frozen=True)
class ImageStatus:
    """What each tag of an image points at and its most recent runs; prints as tables."""

    image: str
    tags: dict[str, TagState]
    runs: list[RunState]
    check_error: str
    held: str = ""
    drift: list[TagFinding] = field(default_factory=list)
    waiting: Waiting | None = None
    definition_error: str = ""

    def __repr__(self) -> str:
        lines = [f"image {self.image}"]
        if self.definition_error:
            lines.append(f"  DEFINITION BROKEN: {self.definition_error}")
        if self.check_error:
            lines.append(f"  last check failed: {self.check_error}")
        if w := self.waiting:
            lines.append(
                f"  {w.tool_version} waits until {w.until} (min_release_age; uploaded "
                f"{w.uploaded_at}); `freshen rebuild {self.image} --version {w.tool_version} "
                "--force` builds it now"
            )
        if self.held:
            lines.append(f"  promotions HELD ({self.held}); tested runs wait for `release`")
        for f in self.drift:
            lines.append(
                f"  DRIFT {f.tag}: {f.verdict} (log {f.expected[:19] or '-'}, "
                f"registry {f.found[:19] or '-'}); run `freshen audit`"
            )
        lines.append(f"  {'TAG':<28} {'VERSION':<12} {'DIGEST':<20} RUN")
        for tag, pointed in sorted(self.tags.items()):
            lines.append(
                f"  {tag:<28} {pointed.tool_version:<12} {pointed.digest[:19]:<20} {pointed.run_id}"
            )
        lines.append(f"  {'RUN':<17} {'VERSION':<12} {'STAGE':<10} {'STATUS':<8} DETECTED")
        for run in self.runs:
            lines.append(
                f"  {run.run_id:<17} {run.tool_version:<12} {run.stage:<10} {run.status:<8} "
                f"{run.detected_at}" + (f"\n      error: {run.error[:300]}" if run.error else "")
            )
            if checked := run.vulnerabilities:
                lines.append(f"      vulnerabilities ({checked.policy}): {checked.summary[:600]}")
        return "\n".join(lines)


def status(image: str) -> ImageStatus:
    """Tags and the most recent runs of `image`, folded from its event log."""
    from workers.app import context

    ctx = context()
    name = validate.image_name(image)
    if name not in ctx.catalog.errors():  # a broken folder still has a status: what broke
        name = ctx.definition(name).name
    return _status(ctx.state(name))


def _status(state: ImageState) -> ImageStatus:
    recent = list(state.runs.values())[-RECENT_RUNS:][::-1]
    return ImageStatus(
        state.name,
        dict(state.tags),
        recent,
        state.check_error,
        state.held,
        list(state.drift),
        state.waiting,
        state.definition_error,
    )


def run(image: str, run_id: str) -> RunState | None:
    """One run's state (None when unknown)."""
    from workers.app import context

    return context().state(image).runs.get(run_id)


def events(image: str) -> list[Recorded]:
    """Every event of `image`, oldest first."""
    from workers.app import context

    return list(context().store.read(image))


def images() -> list[str]:
    """Names of the defined images, broken ones included."""
    from workers.app import context

    ctx = context()
    return sorted({*ctx.definitions, *ctx.catalog.errors()})


def live() -> dict[str, ImageState]:
    """The live projection of every image that has events."""
    from workers.app import context

    return context().projections.all()


def replay() -> dict[str, ImageState]:
    """Fold every stream from scratch (ignoring snapshots); the same state as the live one."""
    from workers.app import context

    return projection.replay(context().store)


def audit(image: str | None = None) -> list[AuditReport]:
    """Every tag the log knows, read from the registry, per image (all by default); drift is
    recorded in the log and shows in `status`."""
    from workers.app import context

    ctx = context()
    names = [ctx.definition(image).name] if image else sorted(ctx.definitions)
    return [audit_image(ctx, name) for name in names]


def hold(image: str, reason: str, by: str | None = None) -> bool:
    """Stop promotions of `image` (checks, builds and tests go on); False if already held."""
    from workers.app import context

    return overrides.hold(context(), image, by or getpass.getuser(), reason)


def release(image: str, reason: str = "released", by: str | None = None) -> list[str]:
    """Resume promotions of `image`; the waiting runs sent to promote."""
    from workers.app import context
    from workers.base import dispatch

    ctx = context()
    waiting = overrides.release(ctx, image, by or getpass.getuser(), reason)
    for run_id in waiting:
        dispatch("promote", ctx.definition(image).name, run_id)
    return waiting


def rollback(image: str, run_id: str, reason: str, by: str | None = None) -> tuple[str, ...]:
    """Move the moving tags back to the earlier tested run `run_id`; the tags moved."""
    from workers.app import context

    return overrides.rollback(context(), image, run_id, by or getpass.getuser(), reason)
