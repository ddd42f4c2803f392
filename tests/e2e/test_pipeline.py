"""The pipeline end to end on real parts: check → build → test → promote through real workers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from celery.result import AsyncResult

from shared.api import rebuild, status
from shared.config import load_settings
from shared.constants import MANIFEST_ACCEPT
from shared.context import Context, build_context
from shared.model.events import Promoted, ReleaseDetected, TestsFailed
from shared.model.projection import RunState
from shared.stages.check import check
from shared.testing.services import settings_from
from shared.testing.workers import descendants
from tests.conftest import PULL_REGISTRY
from tests.e2e.conftest import Pipeline, move_base
from tests.faults.invariants import replay_problems
from workers.app import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RUN_SEQUENCE = [
    "ReleaseDetected",
    "BuildStarted",
    "BuildSucceeded",
    "TestStarted",
    "VulnerabilitiesChecked",
    "TestsPassed",
    "PromotionStarted",
    "PromotionPlanned",
    "Promoted",
    "VersionsCommitted",
    "RunCompleted",
]


def check_now(image: str, timeout_s: float = 60) -> str | None:
    """Send a check task to the check worker and wait for its answer (the run id it started)."""
    result: AsyncResult = app.send_task("workers.check.check_image", args=[image])
    return result.get(timeout=timeout_s)  # type: ignore[no-any-return]


def git(pipeline: Pipeline, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(pipeline.git_remote), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def release_tags(run: RunState) -> list[str]:
    major_minor = ".".join(run.tool_version.split(".")[:2])
    return [
        run.tool_version,
        major_minor,
        "latest",
        f"{run.tool_version}-{run.os_id}{run.os_version}",
    ]


@pytest.fixture(autouse=True)
def replay_equals_live(pipeline: Pipeline) -> Iterator[None]:
    """After each test, whatever it wrote: the log folded from scratch equals the live state.
    Checked after every test, so it holds in whatever order (or subset) the tests run."""
    yield
    problems = replay_problems(pipeline.ctx)
    assert not problems, problems


@pytest.fixture(scope="module")
def first_release(pipeline: Pipeline) -> RunState:
    """From an empty log: a check finds 1.46.3 and the base, and the run goes all the way."""
    pipeline.pypi.set_releases("awscli", ["1.46.1", "1.46.2", "1.46.3", "1.47.0rc1"])
    run_id = check_now("awscli")
    assert run_id, "the first check found nothing to build"
    return pipeline.wait_for_run("awscli", run_id)


def test_first_release_is_built_tested_and_promoted(
    pipeline: Pipeline, first_release: RunState
) -> None:
    run = first_release
    assert run.status == "done", run.error
    assert (run.tool_version, run.os_id) == ("1.46.3", "debian")
    assert run.os_version.startswith("12.")
    passed = [r.event for r in pipeline.ctx.store.read("awscli") if r.type == "TestsPassed"]
    assert passed[0].digest == run.digest  # type: ignore[union-attr]
    names = [s.name for s in passed[0].results]  # type: ignore[union-attr]
    # The original image's tools: `aws help` renders (groff) and jq reads real AWS CLI output.
    assert names[:3] == ["aws-version", "aws-help", "ec2-describe-instances"]
    assert "s3-list-jq" in names
    labels = pipeline.ctx.registry.labels(PULL_REGISTRY, pipeline.repository("awscli"), run.digest)
    assert all(labels.values()) and labels["org.opencontainers.image.version"] == "1.46.3"
    assert labels["org.opencontainers.image.created"] >= run.detected_at[:19]
    assert all(s.exit_code == 0 for s in passed[0].results)  # type: ignore[union-attr]
    for tag in release_tags(run):
        assert pipeline.tag_digest("awscli", tag) == run.digest, tag
    assert pipeline.event_types("awscli", run.run_id) == RUN_SEQUENCE
    assert git(pipeline, "rev-parse", f"{run.git_tag}^{{commit}}") == run.commit
    versions = json.loads(git(pipeline, "show", f"{run.git_tag}:versions/awscli.json"))
    assert versions["digest"] == run.digest and versions["version"] == "1.46.3"
    assert "Freshen-Run: " + run.run_id in git(pipeline, "log", "-1", "--format=%B", run.git_tag)


def test_check_again_starts_nothing(pipeline: Pipeline, first_release: RunState) -> None:
    assert check_now("awscli") is None
    assert pipeline.event_types("awscli").count("ReleaseDetected") == 1


def test_older_release_does_not_move_latest_or_minor(
    pipeline: Pipeline, first_release: RunState
) -> None:
    run_id = rebuild("awscli", version="1.46.2")
    older = pipeline.wait_for_run("awscli", run_id)
    assert older.status == "done", older.error
    assert older.digest != first_release.digest
    assert pipeline.tag_digest("awscli", "1.46.2") == older.digest
    assert pipeline.tag_digest("awscli", "latest") == first_release.digest
    assert pipeline.tag_digest("awscli", "1.46") == first_release.digest
    promoted = [r.event for r in pipeline.ctx.store.read("awscli") if isinstance(r.event, Promoted)]
    assert set(promoted[-1].kept) == {"latest", "1.46"}
    shown = repr(status("awscli"))
    assert "latest" in shown and first_release.digest[:19] in shown and run_id in shown


def test_new_base_digest_rebuilds_and_moves_tags(pipeline: Pipeline) -> None:
    pipeline.pypi.set_releases("awscli-rebase", ["1.46.3"])
    first = pipeline.wait_for_run("awscli-rebase", check_now("awscli-rebase") or "")
    assert first.status == "done", first.error
    # The same base tag gets a new digest with a new OS point release.
    move_base(pipeline.bases["b"], "echo 12.99 > /etc/debian_version")
    second_id = check_now("awscli-rebase")
    assert second_id and second_id != first.run_id
    second = pipeline.wait_for_run("awscli-rebase", second_id)
    assert second.status == "done", second.error
    assert (second.tool_version, second.os_version) == ("1.46.3", "12.99")
    assert second.base_digest != first.base_digest and second.digest != first.digest
    for tag in ("1.46.3", "1.46", "latest", "1.46.3-debian12.99"):
        assert pipeline.tag_digest("awscli-rebase", tag) == second.digest, tag
    old_os_tag = f"1.46.3-debian{first.os_version}"
    assert pipeline.tag_digest("awscli-rebase", old_os_tag) == first.digest


def test_failing_tests_promote_nothing(pipeline: Pipeline) -> None:
    pipeline.pypi.set_releases("awscli-failing", ["1.46.2"])
    good = pipeline.wait_for_run("awscli-failing", check_now("awscli-failing") or "")
    assert good.status == "done", good.error
    before = {t: pipeline.tag_digest("awscli-failing", t) for t in release_tags(good)}
    pipeline.pypi.set_releases("awscli-failing", ["1.46.2", "1.46.3"])
    bad = pipeline.wait_for_run("awscli-failing", check_now("awscli-failing") or "")
    assert bad.status == "failed" and bad.stage == "testing"
    failed = [
        r.event
        for r in pipeline.ctx.store.read("awscli-failing")
        if isinstance(r.event, TestsFailed)
    ]
    assert len(failed) == 1 and failed[0].failed_command == "release-gate"
    assert "known broken" in failed[0].output_tail
    assert {s.name: s.exit_code for s in failed[0].results}["release-gate"] == 7
    assert "Promoted" not in pipeline.event_types("awscli-failing", bad.run_id)
    after = {t: pipeline.tag_digest("awscli-failing", t) for t in release_tags(good)}
    assert after == before and set(after.values()) == {good.digest}
    assert pipeline.tag_digest("awscli-failing", "1.46.3") is None
    # The notifier told of both, once each: what failed, with its output, and what moved.
    assert pipeline.webhook is not None
    expected = {
        "freshen: awscli-failing 1.46.3 failed in test": [
            f"run: {bad.run_id}", "failing command: release-gate", "release 1.46.3 is known broken",
            "rebuild: freshen rebuild awscli-failing --version 1.46.3 --force",
        ],
        "freshen: awscli-failing 1.46.2 promoted": [
            f"run: {good.run_id}", f"digest: {good.digest}", f"  latest: new -> {good.digest[:19]}",
        ],
    }  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = [r.payload for r in pipeline.webhook.got() if r.payload["title"] in expected]
        if len(got) >= 2:
            break
        time.sleep(0.2)
    assert sorted(p["title"] for p in got) == sorted(expected), got
    for payload in got:
        for line in expected[payload["title"]]:
            assert line in payload["message"], (line, payload["message"])


def race_two_checks(contexts: list[Context], image: str) -> list[str | None]:
    """Both contexts check `image` at the same moment; what each check returned."""
    barrier = threading.Barrier(len(contexts))
    started: list[str | None] = []

    def one(ctx: Context) -> None:
        barrier.wait()
        started.append(check(ctx, image))

    threads = [threading.Thread(target=one, args=(c,)) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return started


def test_two_checks_of_one_release_start_one_run(pipeline: Pipeline) -> None:
    contexts = [build_context(load_settings()) for _ in range(2)]
    for trial in range(10):
        version = f"1.0.{trial}"
        pipeline.pypi.set_releases("awscli-race", [version])
        started = race_two_checks(contexts, "awscli-race")
        detected = [
            r.event
            for r in pipeline.ctx.store.read("awscli-race")
            if isinstance(r.event, ReleaseDetected) and r.event.tool_version == version
        ]
        assert len(detected) == 1, trial
        assert sorted(started, key=str) == sorted([None, detected[0].run_id], key=str)


BAD_INPUTS = {
    "bad-pep440": "not PEP 440",
    "bad-yanked": "yanked",
    "bad-prerelease": "pre-release",
    "bad-pypi404": "not found",
    "bad-json": "malformed",
    "bad-timeout": "unreachable",
    "bad-registry404": "not found",
    "bad-registry5xx": "answered HTTP 500",
    "bad-registry401": "denied access",
}


def test_bad_input_starts_nothing_and_workers_keep_serving(pipeline: Pipeline) -> None:
    pipeline.pypi.set_releases("bad-pep440", ["1.0; rm -rf /"])
    pipeline.pypi.set_releases("bad-yanked", ["1.46.3"], yanked=["1.46.3"])
    pipeline.pypi.set_releases("bad-prerelease", ["2.0.0rc1"])
    pipeline.pypi.set_response("bad-json", body=b'{"releases": {"1.0": [')
    pipeline.pypi.set_response("bad-timeout", body=b"{}", delay_s=6)
    for image, expected in BAD_INPUTS.items():
        assert check_now(image) is None, image
        types = pipeline.event_types(image)
        assert types == ["CheckFailed"], (image, types)
        error = next(iter(pipeline.ctx.store.read(image))).event.error  # type: ignore[union-attr]
        assert error.startswith(f"{image}: check failed"), error
        assert expected.lower() in error.lower(), (image, error)
        assert "rm -rf" not in error or "'1.0; rm -rf /'" in error
    # The same failure again is not a new state change.
    assert check_now("bad-json") is None
    assert pipeline.event_types("bad-json") == ["CheckFailed"]
    # The check worker still serves: a good answer is picked up at once, and clears the error.
    pipeline.pypi.set_releases("bad-json", ["1.0.0"])
    assert check_now("bad-json")
    assert pipeline.event_types("bad-json") == ["CheckFailed", "CheckRecovered", "ReleaseDetected"]
    assert len(app.control.ping(timeout=2.0) or []) == 4


def test_redelivered_stage_tasks_do_nothing(pipeline: Pipeline, first_release: RunState) -> None:
    image, run_id = "awscli", first_release.run_id
    before = pipeline.event_types(image)
    tags = {t: pipeline.tag_digest(image, t) for t in release_tags(first_release)}
    for task in ("workers.build.build", "workers.testing.verify", "workers.promote.promote"):
        result: AsyncResult = app.send_task(task, args=[image, run_id])
        assert result.get(timeout=60) == "skipped", task
    assert pipeline.event_types(image) == before
    assert {t: pipeline.tag_digest(image, t) for t in release_tags(first_release)} == tags
    commits = git(pipeline, "log", "--format=%H", f"--grep=Freshen-Run: {run_id}", "main")
    assert commits.splitlines() == [first_release.commit]


def test_cli_shows_tags_and_replays(pipeline: Pipeline, first_release: RunState) -> None:
    def freshen(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shared.cli", *args]
        return subprocess.run(command, env=pipeline.env, capture_output=True, text=True, timeout=60)

    shown = freshen("status", "awscli")
    assert shown.returncode == 0, shown.stderr
    latest = next(line for line in shown.stdout.splitlines() if line.strip().startswith("latest"))
    assert first_release.digest[:19] in latest and first_release.run_id in latest
    assert freshen("replay").returncode == 0
    unknown = freshen("rebuild", "no-such-image")
    assert unknown.returncode == 2 and "unknown image 'no-such-image'" in unknown.stderr


def _environment(pid: int) -> dict[str, str]:
    """The environment a process was started with, as the kernel keeps it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    return {name: value for name, value in pairs}


def test_the_run_is_promoted_while_the_test_worker_holds_no_registry_credential(
    pipeline: Pipeline, first_release: RunState
) -> None:
    """The registry credentials live only in the build and promote workers (and their pool
    children); the test worker tested the candidate it pulled anonymously from the pull
    registry, and the run was promoted all the same."""
    assert first_release.status == "done", first_release.error
    password = pipeline.env["FRESHEN_REGISTRY_PASSWORD"]
    for queue, worker in pipeline.workers.items():
        environments = [_environment(p) for p in (worker.pid, *descendants(worker.pid))]
        assert len(environments) > 1, f"{queue}: no pool child to look at"
        holding = [
            "FRESHEN_REGISTRY_PASSWORD" in env or any(password in v for v in env.values())
            for env in environments
        ]
        assert set(holding) == {queue in ("build", "promote")}, (queue, holding)
    settings = settings_from(_environment(pipeline.workers["test"].pid))
    assert (settings.registry_username, settings.registry_password) == (None, None)
    assert settings.pull_registry == PULL_REGISTRY
    # What the test worker reads needs no credential: the candidate, by digest, from the
    # anonymous pull registry (an engine that has it already does not pull it again).
    repository = pipeline.repository("awscli")
    answer = requests.head(
        f"http://{PULL_REGISTRY}/v2/{repository}/manifests/{first_release.digest}",
        headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
        timeout=10,
    )
    assert answer.status_code == 200, answer.status_code
    assert answer.headers["Docker-Content-Digest"] == first_release.digest
