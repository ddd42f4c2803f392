"""`docker-compose up` on the repository's own docker-compose.yml, with local stand-ins for the
public images (Docker Hub is unreachable here): the whole system runs, Flower shows it, the CLI
drives it, and `down` + `up` keeps its state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from shared.eventstore import EventStore
from shared.projection import Projections
from tests.conftest import BASE_IMAGE

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
SERVICES = (
    "redis",
    "registry",
    "moto",
    "beat",
    "worker-check",
    "worker-build",
    "worker-test",
    "worker-promote",
    "flower",
)
PORTS = {"REDIS_PORT": 16379, "REGISTRY_PORT": 15000, "MOTO_PORT": 15050, "FLOWER_PORT": 15555}
REDIS_PASSWORD = "compose-test-redis-secret"
FLOWER = ("tester", "compose-test-flower-secret")
FLOWER_URL = f"http://127.0.0.1:{PORTS['FLOWER_PORT']}"


@dataclass
class Composed:
    env: dict[str, str]
    project: str

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, *args]
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done

    def freshen(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", "worker-check", "freshen", *args, timeout=120)

    def health(self) -> dict[str, str]:
        ids = self.compose("ps", "-q").stdout.split()
        out = subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Health.Status}}',
                *ids,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(line.split(" ", 1) for line in out.strip().splitlines())

    def wait_healthy(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            health = self.health()
            if set(health) == set(SERVICES) and set(health.values()) == {"healthy"}:
                return
            time.sleep(3)
        raise AssertionError(f"not all services healthy: {self.health()}")


def _test_images(root: Path) -> Path:
    """The shipped awscli definition, on the local base (Docker Hub is unreachable here)."""
    images = root / "images"
    shutil.copytree(ROOT / "images" / "awscli", images / "awscli")
    toml = images / "awscli" / "image.toml"
    toml.write_text(toml.read_text().replace('"python:3-alpine"', f'"{BASE_IMAGE}"'))
    return images


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Composed]:
    root = tmp_path_factory.mktemp("compose")
    subprocess.run(["bash", "scripts/standin-images.sh"], cwd=ROOT, check=True, timeout=900)
    settings = root / "freshen.env"
    settings.write_text(
        f"FRESHEN_PUSH_REGISTRY=127.0.0.1:{PORTS['REGISTRY_PORT']}\n"
        f"FRESHEN_INSECURE_REGISTRIES=127.0.0.1:{PORTS['REGISTRY_PORT']},127.0.0.1:5000\n"
        f"FRESHEN_AWS_ENDPOINT_URL=http://127.0.0.1:{PORTS['MOTO_PORT']}\n"
        "FRESHEN_CHECK_INTERVAL_S=5\n"
        # This machine reaches PyPI through a TLS-intercepting proxy with its own CA.
        "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
    env.update({k: str(v) for k, v in PORTS.items()})
    env.update(
        PYTHON_IMAGE="freshen-standin/python:bookworm",
        REDIS_IMAGE="freshen-standin/redis:bookworm",
        REGISTRY_IMAGE="freshen-standin/registry:bookworm",
        REDIS_PASSWORD=REDIS_PASSWORD,
        FLOWER_USER=FLOWER[0],
        FLOWER_PASSWORD=FLOWER[1],
        SETTINGS_FILE=str(settings),
        IMAGES_DIR=str(_test_images(root)),
    )
    system = Composed(env, f"freshentest{uuid.uuid4().hex[:6]}")
    system.compose("build", timeout=1200)
    system.compose("up", "-d")
    try:
        system.wait_healthy()
        yield system
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        logs = subprocess.run(
            ["docker-compose", "-p", system.project, "logs", "--no-color"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        (ARTIFACTS / "compose.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(
            ["docker-compose", "-p", system.project, "down", "-v", "--remove-orphans"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
        )


def composed_state() -> Projections:
    client = redis.Redis(port=PORTS["REDIS_PORT"], password=REDIS_PASSWORD)
    return Projections(client, EventStore(client))


def registry_tag(tag: str) -> str | None:
    answer = requests.head(
        f"http://127.0.0.1:{PORTS['REGISTRY_PORT']}/v2/freshen/awscli/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None


@pytest.fixture(scope="module")
def promoted(composed: Composed) -> str:
    """Beat's checks find awscli on PyPI; the composed workers build, test and promote it."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = composed_state().load("awscli").runs.values()
        done = [r for r in runs if r.status != "running"]
        if done:
            assert done[0].status == "done", done[0].error
            return done[0].digest
        time.sleep(3)
    raise AssertionError("no run of awscli finished in the composed system")


def test_every_service_is_healthy_and_a_run_promotes_the_tested_digest(
    composed: Composed, promoted: str
) -> None:
    state = composed_state().load("awscli")
    run = next(iter(state.runs.values()))
    tags = [
        "latest",
        run.tool_version,
        ".".join(run.tool_version.split(".")[:2]),
        f"{run.tool_version}-{run.os_id}{run.os_version}",
    ]
    for tag in tags:
        assert registry_tag(tag) == promoted == run.digest, tag
    assert set(composed.health().values()) == {"healthy"}


def test_flower_needs_credentials_and_shows_all_queues(composed: Composed, promoted: str) -> None:
    for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks"):
        assert requests.get(FLOWER_URL + path, timeout=10).status_code == 401, path
    workers = requests.get(f"{FLOWER_URL}/api/workers?refresh=1", auth=FLOWER, timeout=30).json()
    assert {name.split("@")[0] for name in workers} == {"check", "build", "test", "promote"}
    tasks = requests.get(f"{FLOWER_URL}/api/tasks", auth=FLOWER, timeout=30).json()
    run_id = next(iter(composed_state().load("awscli").runs))
    names = {t["name"] for t in tasks.values() if run_id in str(t.get("args"))}
    assert names == {"workers.build.build", "workers.testing.verify", "workers.promote.promote"}


def test_chromium_shows_the_four_workers(composed: Composed, promoted: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    url = f"http://{FLOWER[0]}:{FLOWER[1]}@127.0.0.1:{PORTS['FLOWER_PORT']}/workers"
    browser = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
        "--window-size=1280,900",
    ]
    page = subprocess.run(
        [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    for queue in ("check", "build", "test", "promote"):
        assert f"{queue}@" in page, queue
    shot = ARTIFACTS / "flower-workers.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    assert shot.stat().st_size > 10_000


def test_cli_status_inside_the_composed_system(composed: Composed, promoted: str) -> None:
    shown = composed.freshen("status", "awscli").stdout
    latest = next(line for line in shown.splitlines() if line.strip().startswith("latest"))
    assert promoted[:19] in latest
    as_json = json.loads(composed.freshen("status", "awscli", "--json").stdout)
    assert as_json["awscli"]["tags"]["latest"]["digest"] == promoted


def test_down_and_up_keeps_log_and_state(composed: Composed, promoted: str) -> None:
    before = composed_state().load("awscli")
    composed.compose("down")
    composed.compose("up", "-d")
    composed.wait_healthy()
    after = composed_state().load("awscli")
    assert after.position >= before.position
    assert after.tags["latest"].digest == promoted
    assert registry_tag("latest") == promoted


def test_a_mistyped_setting_stops_a_service_with_its_name(composed: Composed) -> None:
    # The check worker's image and command (compose v1's `run` refuses host networking).
    command = [
        "docker", "run", "--rm", "--network", "host", "-e", "FRESHEN_CHEK_INTERVAL_S=5",
        "freshen:local", "celery", "-A", "workers.app", "worker", "-Q", "check",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "unknown settings: FRESHEN_CHEK_INTERVAL_S" in done.stdout + done.stderr


def test_redis_requires_its_password(composed: Composed) -> None:
    anonymous = redis.Redis(port=PORTS["REDIS_PORT"])
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    wrong = redis.Redis(port=PORTS["REDIS_PORT"], password="not-the-password")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    wrong.close()
    assert REDIS_PASSWORD not in composed.compose("top", "redis").stdout  # not on any argv
