"""`docker-compose up` on the repository's own docker-compose.yml, with local stand-ins for the
public images (Docker Hub is unreachable here) and no secret set: the whole system runs on the
logins it generated, Flower shows it, the CLI drives it, and `down` + `up` keeps its state and
its logins. A second installation generates other logins; each service holds only its own
secrets; the registry refuses writes without the login; Flower, Redis and the registry refuse
the passwords compose once shipped, and a known default password stops `up`."""

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
import yaml

from shared.config import is_weak_secret
from shared.eventstore import EventStore
from shared.projection import Projections
from tests.conftest import BASE_IMAGE

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

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
)
ONE_SHOT = ("secrets", "moto")
# Off the ports of the services the other tests use (5000, 5001, 6379).
PORTS = {
    "REDIS_PORT": 16379,
    "REGISTRY_PORT": 15000,
    "REGISTRY_PULL_PORT": 15001,
    "FLOWER_PORT": 15555,
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
)
# What freshen's compose file once shipped (Redis `freshen`, Flower `admin:freshen`), and the like.
OLD_REDIS_PASSWORD = "freshen"
OLD_LOGINS = (("admin", "freshen"), ("freshen", "freshen"), ("admin", "admin"))
FLOWER_URL = f"http://127.0.0.1:{PORTS['FLOWER_PORT']}"
REGISTRY_URL = f"http://127.0.0.1:{PORTS['REGISTRY_PORT']}"
PULL_URL = f"http://127.0.0.1:{PORTS['REGISTRY_PULL_PORT']}"
SECRETS = "/run/freshen/secrets"
REDIS_URL = {"FRESHEN_REDIS_URL"}
PUSH = REDIS_URL | {"FRESHEN_REGISTRY_USERNAME", "FRESHEN_REGISTRY_PASSWORD"}
# What each service finds in its secrets folder with no settings (docker-compose.yml).
SECRET_FILES = {
    "redis": {"redis-password", "requirepass.conf"},
    "registry": {"htpasswd"},
    "registry-pull": set(),
    "beat": REDIS_URL,
    "worker-check": REDIS_URL,
    "worker-build": PUSH,
    "worker-test": REDIS_URL,
    "worker-promote": PUSH,
    "flower": REDIS_URL | {"flower-basic-auth"},
}


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


def _test_images(root: Path) -> Path:
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
        IMAGES_DIR=str(_test_images(root)),
    )
    return env


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Composed]:
    root = tmp_path_factory.mktemp("compose")
    subprocess.run(["bash", "scripts/standin-images.sh"], cwd=ROOT, check=True, timeout=900)
    system = Composed(compose_env(root), f"freshentest{uuid.uuid4().hex[:6]}")
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


@pytest.fixture(scope="module")
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


def test_every_service_is_healthy_and_a_run_promotes_the_tested_digest(
    composed: Composed, promoted: str
) -> None:
    state = composed_state(composed).load("awscli")
    run = next(iter(state.runs.values()))
    tags = [
        "latest",
        run.tool_version,
        ".".join(run.tool_version.split(".")[:2]),
        f"{run.tool_version}-{run.os_id}{run.os_version}",
    ]
    for tag in tags:
        assert registry_tag(tag) == promoted == run.digest, tag
    assert set(composed.health().values()) == {"healthy", "exited 0"}


def test_flower_needs_credentials_and_shows_all_queues(composed: Composed, promoted: str) -> None:
    for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks"):
        assert requests.get(FLOWER_URL + path, timeout=10).status_code == 401, path
    login = logins(composed).flower
    workers = requests.get(f"{FLOWER_URL}/api/workers?refresh=1", auth=login, timeout=30).json()
    assert {name.split("@")[0] for name in workers} == {"check", "build", "test", "promote"}
    tasks = requests.get(f"{FLOWER_URL}/api/tasks", auth=login, timeout=30).json()
    run_id = next(iter(composed_state(composed).load("awscli").runs))
    names = {t["name"] for t in tasks.values() if run_id in str(t.get("args"))}
    assert names == {"workers.build.build", "workers.testing.verify", "workers.promote.promote"}


def test_chromium_shows_the_four_workers(composed: Composed, promoted: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    user, password = logins(composed).flower
    url = f"http://{user}:{password}@127.0.0.1:{PORTS['FLOWER_PORT']}/workers"
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


def test_down_and_up_keeps_log_state_and_secrets(composed: Composed, promoted: str) -> None:
    before = composed_state(composed).load("awscli")
    composed.compose("down")
    composed.compose("up", "-d")
    composed.wait_healthy()
    assert composed.logins() == composed.login  # generated on the first start only
    after = composed_state(composed).load("awscli")
    assert after.position >= before.position
    assert after.tags["latest"].digest == promoted
    assert registry_tag("latest") == promoted


def test_a_mistyped_setting_stops_a_service_with_its_name(composed: Composed) -> None:
    # The check worker's image and command (compose v1's `run` refuses host networking).
    for setting, message in (
        ("FRESHEN_CHEK_INTERVAL_S=5", "unknown settings: FRESHEN_CHEK_INTERVAL_S"),
        ("FRESHEN_REGISTRY_PASSWORD=freshen", "FRESHEN_REGISTRY_PASSWORD: Value error, refused"),
    ):
        command = [
            "docker", "run", "--rm", "--network", "host", "-e", setting,
            "freshen:local", "celery", "-A", "workers.app", "worker", "-Q", "check",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert message in done.stdout + done.stderr


def test_redis_requires_its_password(composed: Composed) -> None:
    anonymous = redis.Redis(port=PORTS["REDIS_PORT"])
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    for password in ("not-the-password", OLD_REDIS_PASSWORD):
        wrong = redis.Redis(port=PORTS["REDIS_PORT"], password=password)
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
        wrong.close()
    right = redis.Redis(port=PORTS["REDIS_PORT"], password=logins(composed).redis)
    assert right.ping()
    right.close()
    assert logins(composed).redis not in composed.compose("top", "redis").stdout  # no argv


def test_secrets_were_generated_and_each_service_holds_only_its_own(composed: Composed) -> None:
    login = logins(composed)
    generated = [login.redis, login.registry[1], login.flower[1]]
    assert len(set(generated)) == 3
    assert all(len(s) >= 32 and not is_weak_secret(s) for s in generated)
    for service, container in composed.containers().items():
        if service in ONE_SHOT:
            continue
        folder = docker("exec", container, "sh", "-c", f"ls -A {SECRETS} 2>/dev/null || true")
        assert set(folder.split()) == SECRET_FILES[service], service
        # Not in the container's configuration (docker inspect), not on a command line, and in
        # a process environment only where it is that process's login (Flower's).
        seen = docker("inspect", container) + docker("top", container)
        environ = docker("exec", container, "cat", "/proc/1/environ")
        for secret in generated:
            assert secret not in seen, service
            assert secret not in environ or (service, secret) == ("flower", login.flower[1])
    probe = "from shared.config import load_settings as l; s = l(); print(s.registry_password)"
    held = {
        service: composed.compose("exec", "-T", service, "python", "-c", probe).stdout.strip()
        for service in ("worker-test", "flower", "worker-build")
    }
    assert held == {"worker-test": "None", "flower": "None", "worker-build": "**********"}


def test_a_second_installation_gets_other_secrets_each_only_where_used(
    composed: Composed, another: Composed
) -> None:
    given = {
        "GIT_TOKEN": "ghp_Zq8composeGitToken",
        "TEST_AWS_ACCESS_KEY_ID": "AKIAZQ8COMPOSETEST",
        "TEST_AWS_SECRET_ACCESS_KEY": "Zq8-compose-aws-secret",
    }
    another.compose("run", "--rm", "secrets", "write", **given)
    theirs, ours = another.logins(), logins(composed)
    assert theirs.redis != ours.redis
    assert theirs.registry[1] != ours.registry[1]
    assert theirs.flower[1] != ours.flower[1]
    # Who holds what: the folder each service mounts, read from that installation's volumes.
    services = yaml.safe_load(another.compose("config", **given).stdout)["services"]
    holds: dict[str, str] = {}
    for name, service in services.items():
        volume = next((v for v in service.get("volumes", []) if f":{SECRETS}:" in v), None)
        if volume:
            holds[name] = docker(
                "run", "--rm", "--network", "none", "-v", f"{another.project}_{volume}",
                "freshen:local", "sh", "-c", f"cat {SECRETS}/* 2>/dev/null || true",
            )  # fmt: skip

    def holders(secret: str) -> set[str]:
        return {name for name, text in holds.items() if secret in text}

    app = {"beat", "worker-check", "worker-build", "worker-test", "worker-promote", "flower"}
    assert holders(given["GIT_TOKEN"]) == {"worker-promote"}
    assert holders(given["TEST_AWS_SECRET_ACCESS_KEY"]) == {"worker-test"}
    assert holders(theirs.registry[1]) == {"worker-build", "worker-promote"}
    assert holders(theirs.flower[1]) == {"flower"}
    assert holders(theirs.redis) == app | {"redis"}
    # The compose variables reach the secrets service alone.
    for name, service in services.items():
        text = json.dumps(service)
        for value in given.values():
            assert (value in text) == (name == "secrets"), name


def test_the_registry_refuses_pushes_and_deletes_without_credentials(
    composed: Composed, promoted: str
) -> None:
    repository = f"{REGISTRY_URL}/v2/freshen/awscli"
    manifest = {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}
    for auth in (None, *OLD_LOGINS):
        assert (
            requests.post(f"{repository}/blobs/uploads/", auth=auth, timeout=10).status_code == 401
        )
        put = requests.put(
            f"{repository}/manifests/latest", b"{}", headers=manifest, auth=auth, timeout=10
        )
        assert put.status_code == 401
        gone = requests.delete(f"{repository}/manifests/{promoted}", auth=auth, timeout=10)
        assert gone.status_code == 401
    # The Docker Engine holds no login for it either.
    intruder = f"127.0.0.1:{PORTS['REGISTRY_PORT']}/freshen/awscli:intruder"
    docker("tag", "freshen-moto:local", intruder)
    try:
        pushed = subprocess.run(
            ["docker", "push", intruder], capture_output=True, text=True, timeout=120
        )
    finally:
        docker("rmi", intruder)
    assert pushed.returncode != 0 and "no basic auth credentials" in pushed.stderr
    # The pull port: anyone reads, nobody writes.
    pull = f"{PULL_URL}/v2/freshen/awscli"
    assert requests.post(f"{pull}/blobs/uploads/", timeout=10).status_code == 405
    assert requests.delete(f"{pull}/manifests/{promoted}", timeout=10).status_code == 405
    assert registry_tag("latest") == promoted
    # With the generated login, an upload starts (and is cancelled).
    started = requests.post(
        f"{repository}/blobs/uploads/", auth=logins(composed).registry, timeout=10
    )
    assert started.status_code == 202
    location = requests.compat.urljoin(REGISTRY_URL, started.headers["Location"])
    requests.delete(location, auth=logins(composed).registry, timeout=10)


def test_flower_refuses_the_old_default_logins(composed: Composed) -> None:
    for login in OLD_LOGINS:
        answer = requests.get(f"{FLOWER_URL}/api/workers", auth=login, timeout=10)
        assert answer.status_code == 401, login
    answer = requests.get(f"{FLOWER_URL}/api/workers", auth=logins(composed).flower, timeout=30)
    assert answer.status_code == 200


def test_a_known_default_password_stops_up_with_a_clear_message(
    another: Composed, tmp_path: Path
) -> None:
    done = another.compose("up", "-d", check=False, REDIS_PASSWORD="freshen")
    assert done.returncode != 0
    said = another.compose("logs", "--no-color", "secrets").stdout
    assert "REDIS_PASSWORD is a known default password that anyone can guess" in said
    assert not another.health().keys() & {"redis", "registry", "worker-check", "flower"}
    for variable in ("FLOWER_PASSWORD", "REGISTRY_PASSWORD"):
        done = another.compose("run", "--rm", "secrets", check=False, **{variable: "freshen"})
        assert done.returncode == 2 and f"{variable} is a known default password" in done.stderr
    settings = tmp_path / "freshen.env"
    settings.write_text("FRESHEN_GIT_TOKEN=ghp_Zq8inTheSettingsFile\n")
    done = another.compose("run", "--rm", "secrets", check=False, SETTINGS_FILE=str(settings))
    assert done.returncode == 2
    assert "FRESHEN_GIT_TOKEN is in the settings file, which every service reads" in done.stderr
