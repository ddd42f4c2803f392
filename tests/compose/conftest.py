"""The composed system, brought up once for the whole package (it takes minutes), a second
installation beside it, and the first run it promotes."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.compose.system import (
    ARTIFACTS,
    NOTIFY_TOKEN,
    PORTS,
    ROOT,
    Composed,
    compose_env,
    composed_state,
)
from tests.support.receiver import Receiver


@pytest.fixture(scope="package")
def receiver() -> Iterator[Receiver]:
    """A JSON webhook on 127.0.0.1 that the composed notify service posts to."""
    webhook = Receiver()
    webhook.start()
    yield webhook
    webhook.stop()


@pytest.fixture(scope="package")
def composed(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Composed]:
    root = tmp_path_factory.mktemp("compose")
    subprocess.run(["bash", "scripts/standin-images.sh"], cwd=ROOT, check=True, timeout=900)
    env = compose_env(root) | {"NOTIFY_URLS": receiver.url("json", f"hook/{NOTIFY_TOKEN}")}
    system = Composed(env, f"freshentest{uuid.uuid4().hex[:6]}")
    system.compose("build", timeout=1200)
    system.compose("up", "-d")
    try:
        system.wait_healthy()
        system.login = system.logins()
        yield system
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        logs = system.compose("logs", "--no-color", timeout=120, check=False)
        (ARTIFACTS / "compose.log").write_text(logs.stdout + logs.stderr)
        system.down()


@pytest.fixture
def another(composed: Composed) -> Iterator[Composed]:
    """A second installation beside the first: another project, so fresh volumes of its own,
    and other ports."""
    ports = {k: str(v + 10000) for k, v in PORTS.items()}
    system = Composed(composed.env | ports, f"freshenother{uuid.uuid4().hex[:6]}")
    try:
        yield system
    finally:
        system.down()


@pytest.fixture(scope="package")
def promoted(composed: Composed) -> str:
    """Beat's checks find awscli on PyPI; the composed workers build, test and promote it."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = composed_state(composed).load("awscli").runs.values()
        done = [r for r in runs if r.status != "running"]
        if done:
            assert done[0].status == "done", done[0].error
            return done[0].digest
        time.sleep(3)
    raise AssertionError("no run of awscli finished in the composed system")
