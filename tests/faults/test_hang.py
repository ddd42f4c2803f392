"""Faults 6 and 10: a test stage that hangs is killed at its time limit, recorded as failed and
its container removed; while it runs, the container is inspected: no privileges, no
capabilities, memory and process limits, and no registry or git credentials."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import docker
import pytest

from shared.testing.images import define_quick
from shared.testing.system import running
from tests.conftest import BASE_IMAGE, REGISTRY, registry_credentials
from tests.faults.invariants import Figures, container_problems

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

TEST_LIMIT_S = 20
GIT_TOKEN = f"hang-git-{uuid.uuid4().hex}"
# What a test container's environment may hold: where its test credentials are (a file copied
# in: no key, not even a test one, is in its configuration), ids, the image's own.
ALLOWED_ENV = {
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "FRESHEN_IMAGE", "FRESHEN_RUN_ID", "FRESHEN_TEST_ID", "PATH", "HOSTNAME", "HOME", "LANG",
}  # fmt: skip


def _running_container(
    client: docker.DockerClient, name: str, moto: bool = False
) -> dict[str, object]:
    """The running test container whose name starts with `name` (or its moto container)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for found in client.api.containers(filters={"name": name}):
            if found["Names"][0].endswith("-moto") == moto:
                return client.api.inspect_container(found["Id"])  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no running container {name}")


def test_a_hanging_test_is_killed_at_its_limit_recorded_and_removed(
    tmp_path: Path, redis_url: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    image, repository = f"hang-{suffix}", f"freshen-faults-{suffix}/hang"
    define_quick(
        tmp_path / "images", image, "http://127.0.0.1:9/pypi", BASE_IMAGE, repository, 3600
    )
    env = {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(tmp_path / "images"),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_GIT_TOKEN": GIT_TOKEN,
        "FRESHEN_TEST_TIME_LIMIT_S": str(TEST_LIMIT_S),
        "FRESHEN_RECONCILE_INTERVAL_S": "1",
        "FRESHEN_CHECK_INTERVAL_S": "3600",
    }
    client = docker.from_env()
    procs = ("build", "test", "check", "beat")
    try:
        with running("hang", env, procs=procs) as system:
            run_id = system.rebuild(image, "6.0.0")
            started = system.wait_event(image, run_id, "TestStarted")
            info = _running_container(client, f"freshen-test-{image}-{run_id}")
            moto = _running_container(client, f"freshen-test-{image}-{run_id}", moto=True)
            network = client.api.inspect_network(info["HostConfig"]["NetworkMode"])  # type: ignore[index]
            run = system.wait_terminal(image, run_id, timeout_s=120)
            took_s = time.monotonic() - started
            failed = [r.event for r in system.records(image, run_id) if r.type == "TestsFailed"]
            left = container_problems(image, run_id)
    finally:
        client.close()
    for container in (info, moto):  # the test's moto has the same limits
        host = container["HostConfig"]
        assert isinstance(host, dict)
        assert host["Privileged"] is False and not host["CapAdd"] and host["CapDrop"] == ["ALL"]
        assert host["Memory"] == 1024**3 and host["PidsLimit"] == 512
        assert host["SecurityOpt"] == ["no-new-privileges"]
    # The test and its moto alone on an internal network named after the test.
    assert network["Internal"] is True and network["Name"] == str(info["Name"]).lstrip("/")
    assert {c["Name"] for c in network["Containers"].values()} == {
        network["Name"],
        f"{network['Name']}-moto",
    }
    config = info["Config"]
    assert isinstance(config, dict)
    environment = dict(item.split("=", 1) for item in config["Env"])
    assert set(environment) <= ALLOWED_ENV, set(environment) - ALLOWED_ENV
    assert environment["AWS_ENDPOINT_URL"] == "http://moto:5050"
    secrets = (registry_credentials()[1], GIT_TOKEN)  # the build worker holds the first
    assert not any(s in v for v in environment.values() for s in secrets)
    assert run.status == "failed" and run.stage == "testing"
    assert len(failed) == 1 and failed[0].failed_command == "timeout"  # type: ignore[union-attr]
    assert took_s < TEST_LIMIT_S, f"the test stage took {took_s:.1f} s"
    assert not left, left
    figures = Figures("hanging test stage")
    figures.add(True, took_s, limit_s=TEST_LIMIT_S)
    figures.save()
