"""One candidate per run, on the real registry and Docker Engine: the pushed digest is checked
against its run id label, and a failed run's candidate is removed (distribution 2.x cannot
delete a tag alone, so freshen deletes an unused candidate's manifest)."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from shared.adapters.registry import RegistryClient
from shared.config import Settings
from shared.context import Context
from shared.errors import StageError
from shared.model.events import (
    BuildFailed,
    BuildStarted,
    BuildSucceeded,
    Promoted,
    PromotionStarted,
    ReleaseDetected,
    TestsPassed,
    TestStarted,
)
from shared.stages.build import RUN_ID_LABEL, _check_pushed, candidate_tag, cleanup_candidate
from shared.testing.images import define_quick
from tests.conftest import (
    BASE_IMAGE,
    PULL_REGISTRY,
    REGISTRY,
    registry_auth,
    registry_credentials,
)
from tests.support.isolated import flushed_context

REDIS_URL = "redis://127.0.0.1:6379/14"  # this module's own database, flushed before and after
DIGEST = "sha256:" + "c" * 64

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    repository = f"freshen-test-{uuid.uuid4().hex[:8]}/cand"
    define_quick(tmp_path / "images", "cand", "http://127.0.0.1:9/pypi", BASE_IMAGE, repository)
    username, password = registry_credentials()  # as the build and promote workers hold them
    context = flushed_context(
        REDIS_URL, tmp_path / "images", registry_username=username, registry_password=password
    )
    yield context
    context.redis.flushdb()
    context.redis.close()


def push_candidate(repository: str, tag: str, run_id: str) -> str:
    """A tiny image labelled with `run_id`, pushed as `tag`; its registry digest."""
    client = docker.from_env()
    try:
        dockerfile = f'FROM {BASE_IMAGE}\nLABEL {RUN_ID_LABEL}="{run_id}"\n'
        target = f"{REGISTRY}/{repository}"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{target}:{tag}", rm=True)
        auth = registry_auth()
        for line in client.api.push(target, tag=tag, stream=True, decode=True, auth_config=auth):
            assert "error" not in line, line
        client.api.remove_image(f"{target}:{tag}")
    finally:
        client.close()
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("FRESHEN_")]:
            patch.delenv(key)
        found = RegistryClient(Settings(pull_registry=PULL_REGISTRY)).tag_digest(
            PULL_REGISTRY, repository, tag
        )  # read anonymously, as the test worker would
    assert found
    return found


def test_a_pushed_digest_of_another_run_is_refused(ctx: Context) -> None:
    definition = ctx.definition("cand")
    repository = definition.spec.target.repository
    digest = push_candidate(repository, candidate_tag("run-a"), "run-a")
    _check_pushed(ctx, definition, "run-a", digest)  # its own: accepted
    with pytest.raises(StageError, match="carries run id 'run-a', not run-b"):
        _check_pushed(ctx, definition, "run-b", digest)


def test_a_failed_runs_candidate_is_removed_and_a_promoted_one_never(ctx: Context) -> None:
    definition = ctx.definition("cand")
    repository = definition.spec.target.repository
    failed = push_candidate(repository, candidate_tag("r-failed"), "r-failed")
    kept = push_candidate(repository, candidate_tag("r-kept"), "r-kept")
    ctx.registry.copy_to_tag(REGISTRY, repository, kept, "1.0.0")
    ctx.store.append(
        "cand",
        [
            ReleaseDetected("r-kept", "1.0.0", BASE_IMAGE, DIGEST, "check"),
            BuildStarted("r-kept", "a1"),
            BuildSucceeded("r-kept", kept, "debian", "12"),
            TestStarted("r-kept", "t1"),
            TestsPassed("r-kept", kept, ()),
            PromotionStarted("r-kept", "p1"),
            Promoted("r-kept", kept, "1.0.0", ("1.0.0",)),
            ReleaseDetected("r-failed", "1.0.1", BASE_IMAGE, DIGEST, "check"),
            BuildStarted("r-failed", "a2"),
            BuildSucceeded("r-failed", failed, "debian", "12"),
            BuildFailed("r-failed", "cand: test failed"),
        ],
        0,
    )
    # This registry (distribution 2.x) refuses to delete a tag alone: freshen deletes the
    # manifest of a candidate nothing else uses, and never one that a release tag points at.
    assert not ctx.registry.delete_tag(REGISTRY, repository, candidate_tag("r-failed"), failed)
    state = ctx.state("cand")
    cleanup_candidate(ctx, definition, state.runs["r-failed"])
    cleanup_candidate(ctx, definition, state.runs["r-kept"])
    assert ctx.registry.tag_digest(REGISTRY, repository, candidate_tag("r-failed")) is None
    assert ctx.registry.tag_digest(REGISTRY, repository, "1.0.0") == kept
    assert ctx.registry.tag_digest(REGISTRY, repository, candidate_tag("r-kept")) == kept
