"""(Issue 9, a) A hostile image definition, run through the real workers: its Dockerfile's RUN step
and its test script try to move another image's `latest` back, delete a tag, write to Redis,
reach the host's loopback services and read the worker's secrets. Every attempt fails, every
release tag of every image is unchanged, and the run is recorded like any other: its own tests
passed, so it is promoted."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from urllib.parse import urlsplit

import docker
import pytest
import redis
import requests
from celery.result import AsyncResult

from shared.model.events import TestsFailed, TestsPassed
from shared.secrets import MASK
from tests.conftest import BASE_IMAGE, PULL_REGISTRY, REDIS_URL, REGISTRY, registry_auth
from tests.e2e.conftest import Pipeline
from tests.support.hostile import Targets, write_attack
from workers.app import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

IMAGE = "hostile"
REGISTRY_PORTS = (5000, 5001)
# What a test container may see in its environment: the shell's own, and what freshen gives it.
ALLOWED_ENVIRONMENT = {
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "FRESHEN_IMAGE", "FRESHEN_RUN_ID", "FRESHEN_TEST_ID",
    "HOME", "HOSTNAME", "PATH", "PWD", "SHLVL", "OLDPWD", "_",
    "BASE", "VERSION",  # the build's own two arguments
    "LC_CTYPE",  # set by python3 itself (PEP 538)
}  # fmt: skip
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def host_addresses() -> tuple[str, ...]:
    """Every IPv4 address of this machine: its loopback, its bridges', its own."""
    shown = subprocess.run(["ip", "-j", "-4", "addr"], check=True, capture_output=True, text=True)
    return tuple(a["local"] for link in json.loads(shown.stdout) for a in link["addr_info"])


def push_victim(repository: str) -> tuple[str, str]:
    """A victim repository with two different images: (digest of `latest`, digest of `old`)."""
    client = docker.from_env()
    digests = []
    try:
        for tag in ("old", "latest"):
            dockerfile = f"FROM {BASE_IMAGE}\nRUN echo {tag} {uuid.uuid4().hex} > /victim\n"
            client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repository}:{tag}")
            pushed = list(
                client.api.push(
                    repository, tag=tag, stream=True, decode=True, auth_config=registry_auth()
                )
            )
            assert not [line for line in pushed if "error" in line], pushed
            digests += [line["aux"]["Digest"] for line in pushed if "Digest" in line.get("aux", {})]
    finally:
        client.close()
    return digests[1], digests[0]


def release_tags(prefix: str) -> dict[str, str]:
    """`repository:tag` → digest for every repository of this session, read (anonymously) from
    the registry's read-only endpoint."""
    base = f"http://{PULL_REGISTRY}/v2"
    repositories: list[str] = []
    url: str | None = f"{base}/_catalog?n=1000"
    while url:  # the registry pages its catalog (Link: <…>; rel="next")
        page = requests.get(url, timeout=10)
        page.raise_for_status()
        repositories += page.json()["repositories"]
        following = page.links.get("next", {}).get("url")
        url = f"http://{PULL_REGISTRY}{following}" if following else None
    found = {}
    for repository in repositories:
        if not repository.startswith(prefix):
            continue
        tags = requests.get(f"{base}/{repository}/tags/list", timeout=10).json()["tags"] or []
        for tag in tags:
            head = requests.head(
                f"{base}/{repository}/manifests/{tag}",
                headers={"Accept": MANIFEST_TYPES},
                timeout=10,
            )
            head.raise_for_status()
            found[f"{repository}:{tag}"] = head.headers["Docker-Content-Digest"]
    return found


def canary_writes(canary: str) -> list[int]:
    """The Redis databases in which the attack's canary key exists."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        databases = int(client.config_get("databases")["databases"])
        hits = []
        for db in range(databases):
            with redis.Redis.from_url(REDIS_URL, db=db) as other:
                if other.exists(canary):
                    hits.append(db)
        return hits
    finally:
        client.close()


def test_a_hostile_build_and_test_reach_nothing_they_do_not_own(pipeline: Pipeline) -> None:
    victim = f"{pipeline.prefix}/victim"
    latest, old = push_victim(f"{REGISTRY}/{victim}")
    assert latest != old
    pypi_port = urlsplit(pipeline.pypi.index).port
    assert pypi_port is not None
    targets = Targets(
        victim=victim,
        latest=latest,
        old=old,
        hosts=host_addresses(),
        registry_ports=REGISTRY_PORTS,
        redis_port=6379,
        service_ports=(pypi_port, 5050, 5555),
        canary=f"freshen-hostile-{uuid.uuid4().hex[:8]}",
    )
    write_attack(pipeline.root / "images" / IMAGE, targets)
    before = release_tags(pipeline.prefix)
    assert before[f"{victim}:latest"] == latest

    pipeline.pypi.set_releases(IMAGE, ["1.0.0"])
    result: AsyncResult = app.send_task("workers.check.check_image", args=[IMAGE])
    run_id = result.get(timeout=60)
    assert run_id
    run = pipeline.wait_for_run(IMAGE, run_id)

    # The run is an ordinary one: its own tests passed, so it was promoted.
    assert run.status == "done", run.error
    outcomes = [
        r.event
        for r in pipeline.ctx.store.read(IMAGE)
        if isinstance(r.event, TestsPassed | TestsFailed)
    ]
    assert len(outcomes) == 1 and isinstance(outcomes[0], TestsPassed)
    steps = {step.name: step.output_tail for step in outcomes[0].results}
    kinds = ("push", "delete", "redis", "connect", "environment")
    assert set(steps) == {f"{where}-{kind}" for where in ("build", "test") for kind in kinds}
    lines = [line for tail in steps.values() for line in tail.splitlines() if line.strip()]

    # Every attempt ran, from the build and from the test, and every one was stopped.
    expected = [
        f"{kind} {host}:{port} blocked: "
        for host in targets.hosts
        for kind, ports in (
            ("push", REGISTRY_PORTS),
            ("delete", REGISTRY_PORTS),
            ("redis", (targets.redis_port,)),
            ("connect", targets.service_ports),
        )
        for port in ports
    ]
    for where in ("build", "test"):
        missing = [e for e in expected if not any(x.startswith(f"{where} {e}") for x in lines)]
        assert not missing, (where, missing, lines)
    assert not [line for line in lines if "SUCCEEDED" in line]
    # Nothing of the workers' environment (and no secret: the masker would show `***`).
    for line in lines:
        if " environment " in line:
            names = set(line.split(" environment ", 1)[1].split())
            assert names <= ALLOWED_ENVIRONMENT, names - ALLOWED_ENVIRONMENT
    assert not [line for line in lines if MASK in line]
    assert len([line for line in lines if " environment " in line]) == 2

    # The registry and Redis are as they were: no tag of any image moved or went.
    after = release_tags(pipeline.prefix)
    assert {k: v for k, v in after.items() if k in before} == before
    assert after[f"{victim}:latest"] == latest and after[f"{victim}:old"] == old
    assert canary_writes(targets.canary) == []
