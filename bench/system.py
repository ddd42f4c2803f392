"""A freshen to benchmark: image definitions, a base copy in the registry, real Celery workers.

Everything lives under a unique registry prefix (`freshen-bench-<id>/…`), a temporary folder
and the benchmark's own Redis database, so benchmarks run beside other people's tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import docker

from bench.common import (
    BASE_IMAGE,
    PULL_REGISTRY,
    PUSHING_QUEUES,
    REGISTRY,
    REGISTRY_SECRETS,
    ROOT,
    registry_credentials,
)
from shared.containeroutput import STEP_FUNCTION

# A definition whose build and test take about a second: the orchestration shows, not the tool.
TINY_DOCKERFILE = """ARG BASE
FROM ${BASE}
ARG VERSION
LABEL io.freshen.bench.version=${VERSION}
"""
TINY_TEST = (
    "#!/bin/sh\n"
    + STEP_FUNCTION
    + """step python-version python3 --version || exit 1
"""
)
WORKER_READY_S = 90


def unique_prefix() -> str:
    """The registry namespace of one benchmark run."""
    return f"freshen-bench-{uuid.uuid4().hex[:8]}"


def push_base_copy(prefix: str) -> str:
    """Tag and push the local Debian base as `<registry>/<prefix>/base:bookworm`; its name on
    the anonymous pull registry, where check workers (no credentials) read it."""
    client = docker.from_env()
    try:
        repository = f"{REGISTRY}/{prefix}/base"
        client.images.get(BASE_IMAGE).tag(repository, "bookworm")
        username, password = registry_credentials()
        auth = {"username": username, "password": password}
        for line in client.api.push(
            repository, tag="bookworm", stream=True, decode=True, auth_config=auth
        ):
            if "error" in line:
                raise RuntimeError(f"pushing the base copy failed: {line['error']}")
    finally:
        client.close()
    return f"{PULL_REGISTRY}/{prefix}/base:bookworm"


def define(
    images: Path, name: str, index: str, base: str, repository: str, tiny: bool = False
) -> Path:
    """A copy of images/awscli named `name` (PyPI project too), pointed at benchmark inputs."""
    folder = images / name
    shutil.copytree(ROOT / "images" / "awscli", folder)
    toml = (folder / "image.toml").read_text()
    for key, value in (
        ("pypi", name),
        ("index", index),
        ("image", base),
        ("repository", repository),
    ):
        toml = re.sub(rf"(?m)^{key} = .*$", f'{key} = "{value}"', toml)
    (folder / "image.toml").write_text(toml)
    if tiny:
        (folder / "Dockerfile").write_text(TINY_DOCKERFILE)
        (folder / "test.sh").write_text(TINY_TEST)
    return folder


def freshen_environment(redis_url: str, images: Path, **settings: str) -> dict[str, str]:
    """FRESHEN_* settings of the benchmark's workers (and of this process, once applied)."""
    values = {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(images),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_PULL_REGISTRY": PULL_REGISTRY,
        **dict(zip(REGISTRY_SECRETS, registry_credentials(), strict=True)),  # Workers: pushers only
        "FRESHEN_CHECK_INTERVAL_S": "60",
    }
    values.update({f"FRESHEN_{k.upper()}": v for k, v in settings.items()})
    return values


def apply_environment(settings: dict[str, str]) -> None:
    """Make this process use the benchmark's settings (before workers.app reads them)."""
    for name in [k for k in os.environ if k.startswith("FRESHEN_")]:
        del os.environ[name]
    os.environ.update(settings)


class Workers:
    """One Celery worker per queue (prefork, events on; concurrency 1 as in scripts/run.sh)."""

    def __init__(
        self, settings: dict[str, str], queues: Sequence[str], logs: Path, concurrency: int = 1
    ) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")} | settings
        node = uuid.uuid4().hex[:6]
        for queue in queues:
            command = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queue]
            command += [
                "-n",
                f"{queue}-{node}@bench",
                "-c",
                str(concurrency),
                "--pool",
                "prefork",
                "-E",
            ]
            with (logs / f"worker-{queue}.log").open("wb") as log:
                # The registry credentials only for the workers that push, as scripts/run.sh.
                own = (
                    env
                    if queue in PUSHING_QUEUES
                    else {k: v for k, v in env.items() if k not in REGISTRY_SECRETS}
                )
                self.processes[queue] = subprocess.Popen(
                    command, cwd=ROOT, env=own, stdout=log, stderr=subprocess.STDOUT
                )

    def wait_ready(self) -> None:
        from workers.app import app

        deadline = time.monotonic() + WORKER_READY_S
        replies: list[object] = []
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            if len(replies) >= len(self.processes):
                return
            for queue, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"the {queue} worker exited with {process.returncode}")
        raise RuntimeError(f"only {len(replies)} of {len(self.processes)} workers answered")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_workers(
    settings: dict[str, str], queues: Sequence[str], logs: Path, concurrency: int = 1
) -> Iterator[Workers]:
    workers = Workers(settings, queues, logs, concurrency)
    try:
        workers.wait_ready()
        yield workers
    finally:
        workers.stop()


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (a prefork worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
