"""A whole freshen on real parts: image definitions, a local PyPI stand-in, a git remote, and
real Celery workers on all four queues, shared by the end-to-end tests of one session."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import redis

from shared.context import Context
from shared.model.projection import RunState
from shared.testing.pypi_server import PyPIServer
from shared.testing.services import registry_env
from shared.testing.workers import Worker, Workers
from tests.conftest import LOCAL_BASE, PULL_REGISTRY, REDIS_URL, REGISTRY, registry_auth
from tests.e2e import vulnimages
from tests.support import hostile
from tests.support.notifier import NotifierProcess
from tests.support.receiver import Receiver
from tests.support.registry_proxy import LoopbackServer, Reply

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
QUEUES = ("check", "build", "test", "promote")
# A step that fails for one release only: "a new release breaks the image's tests".
GATE_STEP = (
    'step release-gate sh -c \'case "$(aws --version 2>&1)" in *aws-cli/1.46.3*) '
    'echo "release 1.46.3 is known broken" >&2; exit 7;; esac\' || exit 1\n'
)


@dataclass
class Pipeline:
    """Handles on the running system for tests."""

    root: Path
    prefix: str  # registry namespace of this session
    pypi: PyPIServer
    git_remote: Path
    env: dict[str, str]
    ctx: Context
    bases: dict[str, str] = field(default_factory=dict)  # name → base image reference
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # queue → worker
    webhook: Receiver | None = None  # where the session's notifier posts (json://)

    def repository(self, image: str) -> str:
        return self.ctx.definition(image).spec.target.repository

    def tag_digest(self, image: str, tag: str) -> str | None:
        return self.ctx.registry.tag_digest(REGISTRY, self.repository(image), tag)

    def wait_for_run(self, image: str, run_id: str, timeout_s: float = 600) -> RunState:
        """Poll the event log until the run is done or failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.ctx.state(image).runs.get(run_id)
            if run is not None and run.status != "running":
                return run
            time.sleep(0.5)
        raise AssertionError(f"{image}: run {run_id} still running after {timeout_s}s")

    def event_types(self, image: str, run_id: str | None = None) -> list[str]:
        return [
            r.type
            for r in self.ctx.store.read(image)
            if run_id is None or getattr(r.event, "run_id", None) == run_id
        ]


def pushed_as(reference: str) -> str:
    """The name under which a base that definitions read anonymously (PULL_REGISTRY) is pushed."""
    return reference.replace(f"{PULL_REGISTRY}/", f"{REGISTRY}/", 1)


def move_base(reference: str, change: str) -> None:
    """Push a new digest under the same base tag: the base with one more `RUN change` (a base
    image security fix, or a new OS point release)."""
    client = docker.from_env()
    try:
        dockerfile = f"FROM {reference}\nRUN {change}\n"
        target = pushed_as(reference)
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=target, rm=True)
        repository, tag = target.rsplit(":", 1)
        auth = registry_auth()
        for line in client.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
            assert "error" not in line, line
    finally:
        client.close()


def _define(images: Path, name: str, project: str, index: str, base: str, repo: str) -> Path:
    """Copy the real awscli definition under a new name, pointed at test inputs."""
    folder = images / name
    shutil.copytree(ROOT / "images" / "awscli", folder)
    toml = (folder / "image.toml").read_text()
    toml = re.sub(r"(?m)^pypi = .*$", f'pypi = "{project}"', toml)
    toml = re.sub(r"(?m)^index = .*$", f'index = "{index}"', toml)
    toml = re.sub(r"(?m)^image = .*$", f'image = "{base}"', toml)
    toml = re.sub(r"(?m)^repository = .*$", f'repository = "{repo}"', toml)
    (folder / "image.toml").write_text(toml)
    return folder


def _push_base_copy(client: docker.DockerClient, reference: str) -> None:
    """A per-session copy of the local Debian base, so tests may move its tag."""
    image = client.images.get(LOCAL_BASE)
    repository, tag = pushed_as(reference).rsplit(":", 1)
    image.tag(repository, tag)
    auth = registry_auth()
    for line in client.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
        assert "error" not in line, line


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("e2e")
    prefix = f"freshen-e2e-{uuid.uuid4().hex[:8]}"
    ARTIFACTS.mkdir(exist_ok=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    client = docker.from_env()
    # Definitions read the bases anonymously, as the check worker (no credentials) does.
    bases = {n: f"{PULL_REGISTRY}/{prefix}/base-{n}:bookworm" for n in ("a", "b", "c")}
    for reference in bases.values():
        _push_base_copy(client, reference)
    client.close()
    git_remote = root / "versions.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(git_remote)], check=True)
    failing = Reply(500, {"Content-Type": "text/plain"}, b"registry on fire")
    denied = Reply(401, {"WWW-Authenticate": 'Basic realm="test"'}, b"")
    with (
        PyPIServer() as pypi,
        LoopbackServer(lambda _seen: failing) as broken_registry,
        LoopbackServer(lambda _seen: denied) as locked_registry,
    ):
        images = root / "images"
        images.mkdir()
        for name, base in (
            ("awscli", "a"),
            ("awscli-rebase", "b"),
            ("awscli-failing", "a"),
            ("awscli-race", "a"),
            ("awscli-order", "c"),  # tests/e2e/test_promotion.py: moves base c
            ("awscli-ops", "a"),
            ("awscli-audit", "a"),
            ("awscli-busy", "a"),
            ("awscli-metrics", "a"),  # tests/e2e/test_metrics.py
        ):
            _define(images, name, name, pypi.index, bases[base], f"{prefix}/{name}")
        for name in vulnimages.POLICIES:  # tests/e2e/test_vulnerabilities.py
            vulnimages.define(images, name, pypi.index, bases["a"], f"{prefix}/{name}")
        # tests/e2e/test_hostile.py writes the attack (aimed at this session) before its run.
        _define(images, "hostile", "hostile", pypi.index, bases["a"], f"{prefix}/hostile")
        hostile.write_definition(images / "hostile")
        with (images / "awscli-failing" / "test.sh").open("a") as script:
            script.write(GATE_STEP)
        for name in ("pep440", "yanked", "prerelease", "pypi404", "json", "timeout"):
            bad = f"bad-{name}"
            _define(images, bad, bad, pypi.index, bases["a"], f"{prefix}/{bad}")
        _define(
            images,
            "bad-registry404",
            "awscli",
            pypi.index,
            f"{PULL_REGISTRY}/{prefix}/no-such-base:1",
            f"{prefix}/bad-registry404",
        )
        _define(
            images,
            "bad-registry5xx",
            "awscli",
            pypi.index,
            f"{broken_registry.host}/library/base:1",
            f"{prefix}/bad-registry5xx",
        )
        _define(
            images,
            "bad-registry401",
            "awscli",
            pypi.index,
            f"{locked_registry.host}/library/base:1",
            f"{prefix}/bad-registry401",
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")},
            "FRESHEN_REDIS_URL": REDIS_URL,
            "FRESHEN_IMAGES_DIR": str(images),
            "FRESHEN_PUSH_REGISTRY": REGISTRY,
            "FRESHEN_PULL_REGISTRY": PULL_REGISTRY,
            **registry_env(),  # the workers of the queues that push only (for_queue)
            "FRESHEN_INSECURE_REGISTRIES": ",".join(
                [REGISTRY, PULL_REGISTRY, broken_registry.host, locked_registry.host]
            ),
            "FRESHEN_GIT_URL": f"file://{git_remote}",
            "FRESHEN_GIT_WORKDIR": str(root / "git-work"),
            "FRESHEN_HTTP_TIMEOUT_S": "2",
            "FRESHEN_HTTP_RETRIES": "1",
            "FRESHEN_RETRY_AFTER_MAX_S": "1",
            "FRESHEN_CHECK_INTERVAL_S": "3600",
            "FRESHEN_VULNERABILITY_INDEX": pypi.index,
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("FRESHEN_")})
        from workers.app import app, context

        # One worker per queue; only the build and promote workers get the registry credentials.
        workers = Workers(app, env, ARTIFACTS, "e2e", log_prefix="worker-")
        workers.start(*(Worker(queue, queue) for queue in QUEUES))
        webhook = Receiver()
        webhook.start()
        notifier = NotifierProcess(
            REDIS_URL, ARTIFACTS / "e2e-notify.log", notify_urls=webhook.url("json", "e2e")
        )
        try:
            notifier.start()
            workers.wait_ready()
            yield Pipeline(
                root, prefix, pypi, git_remote, env, context(), bases, workers.processes, webhook
            )
        finally:
            if notifier.process is not None:
                notifier.kill()
            webhook.stop()
            workers.stop()
