"""Build: the candidate image from the definition, base pinned by digest, pushed as develop."""

from __future__ import annotations

import hashlib
import logging

from shared.context import Context
from shared.definitions import ImageDefinition
from shared.events import BuildStarted, BuildSucceeded
from shared.lease import Lease
from shared.projection import RunState
from shared.stages import find_run, lease_name, record_attempt, record_once

log = logging.getLogger(__name__)
STAGE = "build"


def target_repository(ctx: Context, definition: ImageDefinition) -> str:
    """`<push registry>/<repository>`: where develop and the release tags live."""
    return f"{ctx.settings.push_registry}/{definition.spec.target.repository}"


def definition_revision(definition: ImageDefinition) -> str:
    """A content hash of the definition's folder: which definition built an image."""
    digest = hashlib.sha256()
    for path in sorted(p for p in definition.folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(definition.folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def oci_labels(definition: ImageDefinition, run: RunState) -> dict[str, str]:
    """OCI annotations on the image: what it is, what it was built from, by which run."""
    return {
        "org.opencontainers.image.version": run.tool_version,
        "org.opencontainers.image.base.name": run.base_image,
        "org.opencontainers.image.base.digest": run.base_digest,
        "org.opencontainers.image.source": definition.spec.target.source,
        "org.opencontainers.image.revision": definition_revision(definition),
        "io.freshen.image": definition.name,
        "io.freshen.run-id": run.run_id,
    }


def build(ctx: Context, image: str, run_id: str, attempt: str) -> bool:
    """Build and push the run's candidate; True when the run now waits for the test stage."""
    definition = ctx.definition(image)
    run = find_run(ctx.state(image), run_id, STAGE)
    if run.status == "failed" or run.reached("built"):
        return run.status == "running" and run.stage == "built"  # redelivered before handing on
    limit = ctx.settings.build_time_limit_s
    with Lease(ctx.redis, lease_name(image, run_id, STAGE), attempt, limit) as held:
        if not held:
            log.info("%s: run %s: another attempt is building it; leaving it", image, run_id)
            return False
        record_attempt(ctx, image, run_id, STAGE, BuildStarted(run_id, attempt))
        target = target_repository(ctx, definition)
        pinned = definition.base.pinned(run.base_digest)
        engine = ctx.engine()
        labels = oci_labels(definition, run)
        digest = engine.build_and_push(definition, run.tool_version, pinned, target, labels)
        os_id, os_version = engine.read_os(f"{target}@{digest}")
        event = BuildSucceeded(run_id, digest, os_id, os_version)
        record_once(ctx, image, run_id, lambda r: r.reached("built"), event)
        log.info("%s: run %s: built %s (%s %s)", image, run_id, digest, os_id, os_version)
    return True
