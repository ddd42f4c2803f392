"""The composed system under test: compose on this repository's docker-compose.yml with local
stand-ins for the public images (Docker Hub is unreachable here), test ports, and no secret set;
its generated logins, its state, its registry. Fixtures: tests/compose/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from shared.adapters.eventstore import EventStore
from shared.model.projection import Projections
from tests.conftest import BASE_IMAGE

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
# Long-running services, each healthy; and the one-shot ones, each exited 0.
SERVICES = (
    "redis",
    "registry",
    "registry-pull",
    "beat",
    "worker-check",
    "worker-build",
    "worker-test",
    "worker-promote",
    "flower",
    "metrics",
    "notify",
)
ONE_SHOT = ("secrets", "moto")
# Off the ports of the services the other tests use (5000, 5001, 6379).
PORTS = {
    "REDIS_PORT": 16379,
    "REGISTRY_PORT": 15000,
    "REGISTRY_PULL_PORT": 15001,
    "FLOWER_PORT": 15555,
    "METRICS_PORT": 19808,
}
# Compose variables that carry secrets: none is set, so every login is generated.
SECRET_VARIABLES = (
    "REDIS_PASSWORD",
    "REGISTRY_USERNAME",
    "REGISTRY_PASSWORD",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
    "GIT_TOKEN",
    "TEST_AWS_ACCESS_KEY_ID",
    "TEST_AWS_SECRET_ACCESS_KEY",
    "NOTIFY_URLS",
)
# What freshen's compose file once shipped (Redis `freshen`, Flower `admin:freshen`), and the like.
OLD_REDIS_PASSWORD = "freshen"
OLD_LOGINS = (("admin", "freshen"), ("freshen", "freshen"), ("admin", "admin"))
FLOWER_URL = f"http://127.0.0.1:{PORTS['FLOWER_PORT']}"
METRICS_URL = f"http://127.0.0.1:{PORTS['METRICS_PORT']}/metrics"
REGISTRY_URL = f"http://127.0.0.1:{PORTS['REGISTRY_PORT']}"
PULL_URL = f"http://127.0.0.1:{PORTS['REGISTRY_PULL_PORT']}"
SECRETS = "/run/freshen/secrets"
# In the composed system's Apprise URL (a receiver of the test's own): its logs never show it.
NOTIFY_TOKEN = "Zq8composeHookToken"


@dataclass
class Composed:
    env: dict[str, str]
    project: str
    login: Logins | None = None  # read once it runs

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, *args]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, (
                f"{' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        return done

    def freshen(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", "worker-check", "freshen", *args, timeout=120)

    def read(self, service: str, name: str) -> str:
        """A file of the service's secrets folder."""
        return self.compose("exec", "-T", service, "cat", f"{SECRETS}/{name}").stdout.strip()

    def containers(self) -> dict[str, str]:
        """Service name → container id, one-shot services included."""
        ids = self.compose("ps", "-q").stdout.split()
        names = docker(
            "inspect", "--format", '{{index .Config.Labels "com.docker.compose.service"}}', *ids
        )
        return dict(zip(names.split(), ids, strict=True))

    def health(self) -> dict[str, str]:
        ids = self.compose("ps", "-q").stdout.split()
        out = docker(
            "inspect",
            "--format",
            '{{index .Config.Labels "com.docker.compose.service"}} '
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}} "
            "{{.State.ExitCode}}{{end}}",
            *ids,
        )
        return dict(line.split(" ", 1) for line in out.strip().splitlines())

    def wait_healthy(self, timeout_s: float = 300) -> None:
        want = {s: "healthy" for s in SERVICES} | {s: "exited 0" for s in ONE_SHOT}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.health() == want:
                return
            time.sleep(3)
        raise AssertionError(f"not all services healthy: {self.health()}")

    def down(self) -> None:
        subprocess.run(
            ["docker-compose", "-p", self.project, "down", "-v", "--remove-orphans"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=300,
        )

    def logins(self) -> Logins:
        """The generated logins, read the way the README says: `run --rm secrets show`."""
        shown = self.compose("run", "--rm", "secrets", "show").stdout
        return Logins.parse(shown)


@dataclass(frozen=True)
class Logins:
    flower: tuple[str, str]
    registry: tuple[str, str]
    redis: str

    @classmethod
    def parse(cls, shown: str) -> Logins:
        words = {line.split()[0]: line.split() for line in shown.splitlines() if line.strip()}

        def after(kind: str, word: str) -> str:
            return words[kind][words[kind].index(word) + 1]

        return cls(
            flower=(after("flower", "user"), after("flower", "password")),
            registry=(after("registry", "user"), after("registry", "password")),
            redis=after("redis", "password"),
        )


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def test_images(root: Path) -> Path:
    """The shipped awscli definition, on the local base (Docker Hub is unreachable here)."""
    images = root / "images"
    shutil.copytree(ROOT / "images" / "awscli", images / "awscli")
    toml = images / "awscli" / "image.toml"
    toml.write_text(toml.read_text().replace('"python:3-alpine"', f'"{BASE_IMAGE}"'))
    return images


def settings_file(root: Path) -> Path:
    settings = root / "freshen.env"
    registries = f"127.0.0.1:{PORTS['REGISTRY_PORT']},127.0.0.1:{PORTS['REGISTRY_PULL_PORT']}"
    settings.write_text(
        f"FRESHEN_PUSH_REGISTRY=127.0.0.1:{PORTS['REGISTRY_PORT']}\n"
        f"FRESHEN_PULL_REGISTRY=127.0.0.1:{PORTS['REGISTRY_PULL_PORT']}\n"
        # The base image is on the test machine's own anonymous pull registry.
        f"FRESHEN_INSECURE_REGISTRIES={registries},{BASE_IMAGE.split('/')[0]}\n"
        "FRESHEN_CHECK_INTERVAL_S=5\n"
        # This machine reaches PyPI through a TLS-intercepting proxy with its own CA.
        "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt\n"
    )
    return settings


def compose_env(root: Path) -> dict[str, str]:
    """The test's environment for compose: ports, stand-in images, and no secret at all."""
    dropped = set(SECRET_VARIABLES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_") and k not in dropped}
    env.update({k: str(v) for k, v in PORTS.items()})
    env.update(
        PYTHON_IMAGE="freshen-standin/python:bookworm",
        REDIS_IMAGE="freshen-standin/redis:bookworm",
        REGISTRY_IMAGE="freshen-standin/registry:bookworm",
        SETTINGS_FILE=str(settings_file(root)),
        IMAGES_DIR=str(test_images(root)),
    )
    return env


def logins(composed: Composed) -> Logins:
    assert composed.login is not None
    return composed.login


def composed_state(composed: Composed) -> Projections:
    client = redis.Redis(port=PORTS["REDIS_PORT"], password=logins(composed).redis)
    return Projections(client, EventStore(client))


def registry_tag(tag: str) -> str | None:
    """The tag's digest as anyone on this machine reads it: anonymously, from the pull port."""
    answer = requests.head(
        f"{PULL_URL}/v2/freshen/awscli/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None
