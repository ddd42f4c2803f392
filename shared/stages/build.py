"""Build: the candidate image from the definition, base pinned by digest, pushed under a tag of
the run's own (`develop-<run id>`); `develop` then moves to the newest candidate in run order."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime

from shared.adapters.lease import Lease
from shared.constants import DEVELOP_TAG
from shared.context import Context
from shared.definitions import ImageDefinition
from shared.errors import FreshenError, StageError
from shared.model.events import BuildStarted, BuildSucceeded
from shared.model.pipeline import Phase, Stage, Status
from shared.model.projection import ImageState, RunState
from shared.stages import find_run, lease_name, record_attempt, record_once

log = logging.getLogger(__name__)
STAGE = Stage.BUILD
RUN_ID_LABEL = "io.freshen.run-id"
# Moving `develop` is short; a builder waits this long for another builder of the image.
DEVELOP_LEASE_WAIT_S = 10


def target_repository(ctx: Context, definition: ImageDefinition) -> str:
    """`<push registry>/<repository>`: where candidates and the release tags live."""
    return f"{ctx.settings.push_registry}/{definition.spec.target.repository}"


def pulled_by_digest(ctx: Context, definition: ImageDefinition, digest: str) -> str:
    """`<pull registry>/<repository>@<digest>`: the pushed image as processes without registry
    credentials (the test stage) pull it, anonymously."""
    registry = ctx.settings.pull_registry or ctx.settings.push_registry
    return f"{registry}/{definition.spec.target.repository}@{digest}"


def candidate_tag(run_id: str) -> str:
    """The run's own candidate tag: no other build ever pushes it."""
    return f"{DEVELOP_TAG}-{run_id}"


def definition_revision(definition: ImageDefinition) -> str:
    """A content hash of the definition's folder: which definition built an image."""
    digest = hashlib.sha256()
    for path in sorted(p for p in definition.folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(definition.folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def oci_labels(
    definition: ImageDefinition, run: RunState, created: datetime | None = None
) -> dict[str, str]:
    """OCI annotations on the image: what it is, when and from what it was built, by which run.
    A label without a value (an unset `source`) is left out, never written empty."""
    when = (created or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    labels = {
        "org.opencontainers.image.created": when.replace("+00:00", "Z"),
        "org.opencontainers.image.version": run.tool_version,
        "org.opencontainers.image.base.name": run.base_image,
        "org.opencontainers.image.base.digest": run.base_digest,
        "org.opencontainers.image.source": definition.spec.target.source,
        "org.opencontainers.image.revision": definition_revision(definition),
        "io.freshen.image": definition.name,
        RUN_ID_LABEL: run.run_id,
    }
    return {name: value for name, value in labels.items() if value}


def _check_pushed(ctx: Context, definition: ImageDefinition, run_id: str, digest: str) -> None:
    """What the registry holds under `digest` is this run's build (its run id label)."""
    repository = definition.spec.target.repository
    labels = ctx.registry.labels(ctx.settings.push_registry, repository, digest)
    if labels.get(RUN_ID_LABEL) != run_id:
        raise StageError(
            definition.name, STAGE,
            f"pushed {digest} carries run id {labels.get(RUN_ID_LABEL)!r}, not {run_id}; "
            "another build overwrote the candidate tag; rebuild",
        )  # fmt: skip


def newest_candidate(state: ImageState) -> RunState | None:
    """The built run latest in run order that has not failed."""
    built = [r for r in state.runs.values() if r.digest and r.status != Status.FAILED]
    return max(built, key=lambda r: r.order) if built else None


def move_develop(ctx: Context, definition: ImageDefinition, owner: str) -> None:
    """Point `develop` at the newest candidate (one mover per image at a time). Best effort:
    `develop` is never promoted, so a failure here is logged, not a failed build."""
    lease = Lease(ctx.redis, f"{definition.name}:develop", owner)
    deadline = time.monotonic() + DEVELOP_LEASE_WAIT_S
    while not lease.acquire():
        if time.monotonic() > deadline:
            log.warning("%s: develop is being moved by another build; left to it", definition.name)
            return
        time.sleep(0.2)
    try:
        newest = newest_candidate(ctx.state(definition.name))
        registry, repository = ctx.settings.push_registry, definition.spec.target.repository
        if newest and ctx.registry.tag_digest(registry, repository, DEVELOP_TAG) != newest.digest:
            ctx.registry.copy_to_tag(registry, repository, newest.digest, DEVELOP_TAG)
    except FreshenError as exc:
        log.warning("%s: build: moving develop failed: %s", definition.name, exc)
    finally:
        lease.release()


def build(ctx: Context, image: str, run_id: str, attempt: str) -> bool:
    """Build and push the run's candidate; True when the run now waits for the test stage."""
    definition = ctx.definition(image)
    run = find_run(ctx.state(image), run_id, STAGE)
    if run.status == Status.FAILED or run.reached(Phase.BUILT):
        return run.status == Status.RUNNING and run.stage == Phase.BUILT  # redelivered
    with Lease(ctx.redis, lease_name(image, run_id, STAGE), attempt) as held:
        if not held:
            log.info("%s: run %s: another attempt is building it; leaving it", image, run_id)
            return False
        record_attempt(ctx, image, run_id, STAGE, BuildStarted(run_id, attempt))
        target = target_repository(ctx, definition)
        pinned = definition.base.pinned(run.base_digest)
        engine = ctx.engine()
        labels = oci_labels(definition, run)
        tag = candidate_tag(run_id)
        digest = engine.build_and_push(definition, run.tool_version, pinned, target, labels, tag)
        _check_pushed(ctx, definition, run_id, digest)
        os_id, os_version = engine.read_os(f"{target}@{digest}")
        event = BuildSucceeded(run_id, digest, os_id, os_version)
        record_once(ctx, image, run_id, lambda r: r.reached(Phase.BUILT), event)
        log.info("%s: run %s: built %s (%s %s)", image, run_id, digest, os_id, os_version)
    move_develop(ctx, definition, attempt)
    return True


def cleanup_candidate(ctx: Context, definition: ImageDefinition, run: RunState) -> None:
    """Remove the run's own candidate tag once the run is promoted or failed (best effort).

    Registries that can delete a tag alone (OCI 1.1) lose just the tag. Others (distribution
    2.x) can only delete a manifest with every tag on it: that is done for a candidate no
    release tag and not `develop` points at, and a promoted candidate's tag is left.
    """
    registry, repository = ctx.settings.push_registry, definition.spec.target.repository
    tag = candidate_tag(run.run_id)
    try:
        digest = ctx.registry.tag_digest(registry, repository, tag)
        if digest is None or ctx.registry.delete_tag(registry, repository, tag, digest):
            return
        state = ctx.state(definition.name)
        in_use = {t.digest for t in state.tags.values()}
        in_use.add(ctx.registry.tag_digest(registry, repository, DEVELOP_TAG) or "")
        in_use |= {m.to_digest for r in state.runs.values() for m in r.plan}
        if digest not in in_use and not run.passed_tests:
            ctx.registry.delete_manifest(registry, repository, digest)
    except FreshenError as exc:
        log.warning("%s: run %s: candidate %s not cleaned up: %s", definition.name,
                    run.run_id, tag, exc)  # fmt: skip
