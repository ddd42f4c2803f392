"""Compose's secrets (issue 9, test c): generated on the first start, different in a second
installation, each only in the services that use it; the registry refuses writes without its
login; Flower, Redis and the registry refuse the passwords compose once shipped, and a known
default password stops `up`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from shared.weaksecrets import is_weak_secret
from tests.compose.system import (
    FLOWER_URL,
    OLD_LOGINS,
    ONE_SHOT,
    PORTS,
    PULL_URL,
    REGISTRY_URL,
    SECRETS,
    Composed,
    docker,
    logins,
    registry_tag,
)

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

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
    "metrics": REDIS_URL,
    "notify": REDIS_URL | {"FRESHEN_NOTIFY_URLS"},  # the composed system notifies a receiver
}


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
        "NOTIFY_URLS": "json://127.0.0.1:9/hook/Zq8composeNotifyToken",
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

    app = {
        "beat",
        "worker-check",
        "worker-build",
        "worker-test",
        "worker-promote",
        "flower",
        "metrics",
        "notify",
    }
    assert holders(given["GIT_TOKEN"]) == {"worker-promote"}
    assert holders(given["NOTIFY_URLS"]) == {"notify"}
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
