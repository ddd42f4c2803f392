"""A freshen to benchmark: image definitions, a base copy in the registry, real Celery workers
(shared/testing/workers.py).

Everything lives under a unique registry prefix (`freshen-bench-<id>/…`), a temporary folder
and the benchmark's own Redis database, so benchmarks run beside other people's tests.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import docker

from bench.common import (
    BASE_IMAGE,
    PULL_REGISTRY,
    REGISTRY,
    ROOT,
    registry_credentials,
)
from shared.adapters.containeroutput import STEP_FUNCTION
from shared.testing.services import REGISTRY_SECRETS
from shared.testing.workers import Worker, Workers, descendants

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


@contextmanager
def running_workers(
    settings: dict[str, str], queues: Sequence[str], logs: Path, concurrency: int = 1
) -> Iterator[Workers]:
    """One Celery worker per queue (prefork, events on; concurrency 1 as in scripts/run.sh),
    logging at Celery's default level (WARNING: no line per task); stopped after the block."""
    from workers.app import app

    host = f"bench-{uuid.uuid4().hex[:6]}"
    workers = Workers(app, settings, logs, host, log_prefix="worker-", loglevel="WARNING")
    try:
        workers.start(*(Worker(queue, queue, concurrency) for queue in queues))
        workers.wait_ready()
        yield workers
    finally:
        workers.stop()


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (a prefork worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total
