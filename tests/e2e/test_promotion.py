"""Promotion's promises end to end: one forward-only order for every moving tag, the versions
file, one candidate per run, operator overrides and the registry audit, through real workers,
the real registry and a real git remote."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import docker
import pytest
from celery.result import AsyncResult

from shared import sends
from shared.adapters.lease import Lease
from shared.api import hold, rebuild, release, rollback, status
from shared.constants import DEVELOP_TAG
from shared.model.events import AuditRecorded, RolledBack
from shared.model.projection import RunState
from shared.stages import lease_name, overrides
from shared.stages.audit import Verdict, audit_image
from shared.stages.build import RUN_ID_LABEL
from shared.stages.promote import promote as promote_stage
from shared.testing.services import for_queue
from tests.conftest import LOCAL_BASE, REGISTRY, registry_auth
from tests.e2e.conftest import Pipeline, move_base
from workers.app import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def check_now(image: str) -> str | None:
    result: AsyncResult = app.send_task("workers.check.check_image", args=[image])
    return result.get(timeout=60)  # type: ignore[no-any-return]


def wait_for_phase(pipeline: Pipeline, image: str, run_id: str, phase: str) -> RunState:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        run = pipeline.ctx.state(image).runs.get(run_id)
        if run is not None and (run.reached(phase) or run.status != "running"):
            assert run.status != "failed", run.error
            return run
        time.sleep(0.5)
    raise AssertionError(f"{image}: run {run_id} did not reach {phase}")


def moving_tags(run: RunState) -> list[str]:
    minor = ".".join(run.tool_version.split(".")[:2])
    return [run.tool_version, f"{run.tool_version}-{run.os_id}{run.os_version}", minor, "latest"]


def versions_at_head(pipeline: Pipeline, path: str) -> dict[str, str]:
    shown = subprocess.run(
        ["git", "--git-dir", str(pipeline.git_remote), "show", f"main:{path}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_same_version_two_bases_promoted_in_the_wrong_order_keeps_the_newer_base(
    pipeline: Pipeline,
) -> None:
    """(c) The base changed while a run was in test: whichever promotes last, the run on the
    newer base keeps every tag (the first version let the older base take them back)."""
    image, ctx = "awscli-order", pipeline.ctx
    pipeline.pypi.set_releases(image, ["1.46.3"])
    assert hold(image, "e2e: promote in a chosen order")
    old_id = check_now(image)
    assert old_id
    wait_for_phase(pipeline, image, old_id, "tested")
    move_base(pipeline.bases["c"], "echo fixed > /etc/freshen-base-fix")  # same OS release
    new_id = check_now(image)
    assert new_id and new_id != old_id
    new = wait_for_phase(pipeline, image, new_id, "tested")
    old = ctx.state(image).runs[old_id]
    assert (old.stage, new.stage) == ("tested", "tested")  # both held after their tests
    assert old.base_digest != new.base_digest and old.order < new.order
    # Released without sending the promotes, which this test then runs in the wrong order.
    assert set(overrides.release(ctx, image, "e2e", "wrong order on purpose")) == {old_id, new_id}
    assert promote_stage(ctx, image, new_id, "e2e-new") == "promoted"
    assert promote_stage(ctx, image, old_id, "e2e-old") == "promoted"

    state = ctx.state(image)
    new, old = state.runs[new_id], state.runs[old_id]
    assert moving_tags(new) == moving_tags(old)  # the same OS release: the same four tags
    for tag in moving_tags(new):
        assert pipeline.tag_digest(image, tag) == new.digest, tag
        assert state.tags[tag].run_id == new_id, tag
    assert old.tags == [] and set(old.kept) == set(moving_tags(old))
    assert audit_image(ctx, image, record=False).drift == ()
    assert versions_at_head(pipeline, f"versions/{image}.json")["digest"] == new.digest


@pytest.fixture(scope="module")
def ops_runs(pipeline: Pipeline) -> dict[str, RunState]:
    """awscli-ops: 1.46.3 promoted, then 1.46.2 after it (an out-of-order release)."""
    image = "awscli-ops"
    pipeline.pypi.set_releases(image, ["1.46.2", "1.46.3"])
    newer = pipeline.wait_for_run(image, rebuild(image, version="1.46.3"))
    older = pipeline.wait_for_run(image, rebuild(image, version="1.46.2"))
    assert newer.status == "done" and older.status == "done", (newer.error, older.error)
    return {"1.46.3": newer, "1.46.2": older}


def test_an_out_of_order_release_moves_neither_tags_nor_the_versions_file(
    pipeline: Pipeline, ops_runs: dict[str, RunState]
) -> None:
    """(d) 1.46.3 then 1.46.2: `latest`, `1.46` and versions/<image>.json stay on 1.46.3;
    1.46.2 gets its own tags and its per-release record."""
    image, newer, older = "awscli-ops", ops_runs["1.46.3"], ops_runs["1.46.2"]
    assert pipeline.tag_digest(image, "latest") == newer.digest
    assert pipeline.tag_digest(image, "1.46") == newer.digest
    assert pipeline.tag_digest(image, "1.46.2") == older.digest
    assert set(older.kept) == {"latest", "1.46"}
    assert versions_at_head(pipeline, f"versions/{image}.json")["version"] == "1.46.3"
    record = versions_at_head(pipeline, f"versions/{image}/1.46.2.json")
    assert record["digest"] == older.digest and record["run_id"] == older.run_id


def test_each_run_pushes_its_own_candidate_and_develop_is_the_newest(
    pipeline: Pipeline, ops_runs: dict[str, RunState]
) -> None:
    """(4) Every pushed candidate carries its own run id; `develop` points at the newest
    candidate in run order (1.46.3), although 1.46.2 was built last."""
    image, ctx = "awscli-ops", pipeline.ctx
    repository = pipeline.repository(image)
    for run in ops_runs.values():
        labels = ctx.registry.labels(REGISTRY, repository, run.digest)
        assert labels[RUN_ID_LABEL] == run.run_id
    assert pipeline.tag_digest(image, DEVELOP_TAG) == ops_runs["1.46.3"].digest


def test_hold_release_and_rollback_are_recorded_and_obeyed(
    pipeline: Pipeline, ops_runs: dict[str, RunState]
) -> None:
    """(10) A held image's tested run waits; release promotes it; rollback moves the moving tags
    back to an earlier tested run with who and why; the next newer run moves them forward."""
    image, ctx = "awscli-ops", pipeline.ctx
    first = ops_runs["1.46.3"]
    assert hold(image, "upstream 1.46.3 rebuild looks wrong", by="e2e")
    again = rebuild(image, version="1.46.3", force=True)
    waiting = wait_for_phase(pipeline, image, again, "tested")
    time.sleep(3)  # the promote task came and went: held
    assert ctx.state(image).runs[again].stage == "tested"
    assert pipeline.tag_digest(image, "latest") == first.digest
    assert "promotions HELD (e2e: upstream 1.46.3 rebuild looks wrong)" in repr(status(image))

    assert release(image, "checked", by="e2e") == [again]
    second = pipeline.wait_for_run(image, again)
    assert second.status == "done", second.error
    for tag in moving_tags(second):
        assert pipeline.tag_digest(image, tag) == second.digest == waiting.digest, tag

    moved = rollback(image, first.run_id, "the rebuild breaks s3 cp", by="e2e")
    assert set(moved) == set(moving_tags(first))
    for tag in moving_tags(first):
        assert pipeline.tag_digest(image, tag) == first.digest, tag
    rolled = [r.event for r in ctx.store.read(image) if isinstance(r.event, RolledBack)]
    assert (rolled[-1].by, rolled[-1].reason) == ("e2e", "the rebuild breaks s3 cp")
    assert audit_image(ctx, image, record=False).drift == ()

    third = pipeline.wait_for_run(image, rebuild(image, version="1.46.3", force=True))
    assert third.status == "done", third.error
    for tag in moving_tags(third):
        assert pipeline.tag_digest(image, tag) == third.digest, tag


def test_audit_reports_moved_missing_and_untested_tags_and_status_shows_drift(
    pipeline: Pipeline,
) -> None:
    """(3) Tags changed behind freshen's back are found, recorded once and shown."""
    image, ctx = "awscli-audit", pipeline.ctx
    pipeline.pypi.set_releases(image, ["1.46.2", "1.46.3"])
    first = pipeline.wait_for_run(image, rebuild(image, version="1.46.3"))
    older = pipeline.wait_for_run(image, rebuild(image, version="1.46.2"))
    third = pipeline.wait_for_run(image, rebuild(image, version="1.46.3", force=True))
    assert {first.status, older.status, third.status} == {"done"}
    assert audit_image(ctx, image).drift == ()

    repository = pipeline.repository(image)
    assert ctx.registry.delete_manifest(REGISTRY, repository, older.digest)  # 1.46.2 tags gone
    ctx.registry.copy_to_tag(REGISTRY, repository, first.digest, "1.46.3")  # tested, not logged
    client = docker.from_env()
    try:
        client.images.get(LOCAL_BASE).tag(f"{REGISTRY}/{repository}", "junk")
        pushed = client.api.push(
            f"{REGISTRY}/{repository}",
            "junk",
            stream=True,
            decode=True,
            auth_config=registry_auth(),
        )
        for line in pushed:
            assert "error" not in line, line
    finally:
        client.close()
    junk = pipeline.tag_digest(image, "junk")
    assert junk
    ctx.registry.copy_to_tag(REGISTRY, repository, junk, "latest")  # never tested

    cli = subprocess.run(
        [sys.executable, "-m", "shared.cli", "audit", image, "--json"],
        env=for_queue(pipeline.env, "check"),  # no credentials: it reads the pull registry
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1, cli.stderr
    verdicts = {f["tag"]: f["verdict"] for f in json.loads(cli.stdout)[image]}
    os_tag = f"1.46.2-{older.os_id}{older.os_version}"
    assert verdicts == {
        "1.46.3": Verdict.MOVED,
        "latest": Verdict.UNTESTED,
        "1.46.2": Verdict.MISSING,
        os_tag: Verdict.MISSING,
        "1.46": Verdict.AGREES,
        f"1.46.3-{third.os_id}{third.os_version}": Verdict.AGREES,
    }
    recorded = [r.event for r in ctx.store.read(image) if isinstance(r.event, AuditRecorded)]
    assert len(recorded) == 1 and {f.tag for f in recorded[0].findings} == {
        "1.46.3", "latest", "1.46.2", os_tag,
    }  # fmt: skip
    audit_image(ctx, image)  # the same drift again: nothing new recorded
    assert sum(1 for r in ctx.store.read(image) if isinstance(r.event, AuditRecorded)) == 1
    shown = repr(status(image))
    assert "DRIFT latest: untested" in shown and "DRIFT 1.46.2: missing" in shown

    # The next promotion of a later run repairs what it owns; the audit then records less drift.
    fixed = pipeline.wait_for_run(image, rebuild(image, version="1.46.3", force=True))
    assert fixed.status == "done", fixed.error
    assert {f.tag for f in audit_image(ctx, image).drift} == {"1.46.2", os_tag}
    assert ctx.state(image).drift == list(audit_image(ctx, image, record=False).drift)


def test_waiting_for_another_promote_spends_no_retries(
    pipeline: Pipeline,
) -> None:
    """(6) While another holder moves the image's tags, the promote attempt is re-sent every
    few seconds with its transient-error retry count untouched (the first version spent one
    retry per wait, so a later registry hiccup failed the run at once)."""
    image, ctx = "awscli-busy", pipeline.ctx
    pipeline.pypi.set_releases(image, ["1.46.3"])
    other = Lease(ctx.redis, lease_name(image, "-", "promote"), "another-promote")
    assert other.acquire()
    try:
        run_id = rebuild(image, version="1.46.3")
        wait_for_phase(pipeline, image, run_id, "tested")
        attempt = sends.attempt_id(run_id, "promote", 0, 0)
        deliveries: set[str] = set()
        retries: set[int] = set()
        deadline = time.monotonic() + 45
        while len(deliveries) < 7 and time.monotonic() < deadline:
            for raw in ctx.redis.hvals("unacked"):
                message = json.loads(raw)[0]
                if message["headers"]["id"] == attempt:
                    deliveries.add(message["properties"]["delivery_tag"])
                    retries.add(message["headers"]["retries"])
            time.sleep(0.2)
        assert len(deliveries) >= 7, deliveries  # more waits than the 5 transient retries
        assert retries == {0}
        assert ctx.state(image).runs[run_id].stage == "tested"
    finally:
        other.release()
    done = pipeline.wait_for_run(image, run_id, timeout_s=120)
    assert done.status == "done", done.error
    assert pipeline.tag_digest(image, "latest") == done.digest
