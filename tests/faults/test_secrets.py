"""Security 8: distinctive secret values for the registry password, the git token and the AWS
secret appear nowhere, neither plain nor URL-encoded nor inside base64 text: not in worker or
beat logs, events, Celery task messages, results or task events (what Flower shows), exception
texts, anything else in Redis, `docker inspect` of any container, network or image freshen made,
the git working copy's `.git/config`, or any process's command line.

The registry is a throw-away one with htpasswd auth, so the password is really used (pulls,
pushes, manifest copies); a passing run, a failing test and a failing check all happen.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import pytest
import redis

from shared.constants import MANAGED_LABEL
from shared.testing.images import bare_remote, define_quick
from shared.testing.pypi_server import PyPIServer
from shared.testing.system import System, running
from tests.faults.invariants import Figures
from tests.support.throwaway import RegistryServer, registry_with_base

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

# Unique per session: run ids (and test container names) derive from the image name.
GOOD, BAD = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("good", "bad"))

# Characters that URL-encoding changes, so the encoded spelling is a different string.
SECRETS = {
    "registry password": f"RegPw/{uuid.uuid4().hex}+&=",
    "git token": f"GitTok/{uuid.uuid4().hex}+&=",
    "aws secret": f"AwsSec/{uuid.uuid4().hex}+&=",
}


def spellings(secret: str) -> dict[str, bytes]:
    """The secret as itself, URL-encoded, and the part of its base64 text that does not depend
    on what surrounds it, at each of the three alignments (a Basic `user:secret` is one)."""
    raw = secret.encode()
    forms = {"plain": raw, "url-encoded": quote(secret, safe="").encode()}
    for shift, start in ((0, 0), (1, 2), (2, 3)):  # base64 characters the prefix still touches
        encoded = base64.b64encode(b"\0" * shift + raw)
        forms[f"base64+{shift}"] = encoded[start:-4]
    return forms


class Sampler:
    """While the system runs: `docker inspect` of every container and network freshen labels
    as its own (test and moto containers, test networks) and every process's command line."""

    def __init__(self) -> None:
        self.inspected: dict[str, Any] = {}
        self.command_lines: set[bytes] = set()
        self._docker = docker.from_env()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler")

    def _loop(self) -> None:
        label = {"label": MANAGED_LABEL}
        while not self._stop.wait(0.1):
            for container in self._docker.api.containers(all=True, filters=label):
                try:
                    self.inspected[container["Id"]] = self._docker.api.inspect_container(
                        container["Id"]
                    )
                except docker.errors.NotFound:
                    continue
            for network in self._docker.api.networks(filters=label):
                self.inspected[network["Id"]] = network
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.command_lines.add(cmdline.read_bytes())
                except OSError:
                    continue

    def images(self, repository_prefix: str) -> list[Any]:
        """`docker inspect` of the images built into repositories under the prefix."""
        return [
            self._docker.api.inspect_image(image["Id"])
            for image in self._docker.api.images()
            if any(tag.startswith(repository_prefix) for tag in image.get("RepoTags") or ())
        ]

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._docker.close()


class EventTap:
    """Receives the Celery task events the workers send (the feed Flower shows)."""

    def __init__(self, system: System) -> None:
        self.events: list[dict[str, Any]] = []
        self._system = system
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="event-tap")

    def _loop(self) -> None:
        app = self._system.app
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": self.events.append})
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue
                except OSError:
                    continue

    def __enter__(self) -> EventTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    credentials = ("freshen", SECRETS["registry password"])
    with registry_with_base(tmp_path / "registry", credentials) as server:
        yield server


def _redis_dump(client: redis.Redis) -> bytes:
    """Every value of every key in the suite's database, as bytes."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            out += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out += [k + b"=" + v for _, f in client.xrange(key) for k, v in f.items()]
    return b"\n".join(out)


def test_secrets_appear_in_no_log_event_result_or_message(
    tmp_path: Path, registry: RegistryServer, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    # Read anonymously (the check worker holds no credentials), pushed to with them.
    base = f"{registry.pull_host}/library/debian-python:bookworm"
    images = tmp_path / "images"
    with PyPIServer() as pypi:
        define_quick(images, GOOD, pypi.index, base, "faults/good", test_sleep_s=0.1)
        bad = define_quick(images, BAD, pypi.index, base, "faults/bad", test_sleep_s=0.1)
        (bad / "test.sh").write_text((bad / "test.sh").read_text() + "step fails false || exit 1\n")
        env = {
            "FRESHEN_REDIS_URL": redis_url,
            "FRESHEN_IMAGES_DIR": str(images),
            "FRESHEN_PUSH_REGISTRY": registry.host,
            "FRESHEN_PULL_REGISTRY": registry.pull_host,
            "FRESHEN_INSECURE_REGISTRIES": f"{registry.host},{registry.pull_host}",
            "FRESHEN_REGISTRY_USERNAME": "freshen",
            "FRESHEN_REGISTRY_PASSWORD": SECRETS["registry password"],
            "FRESHEN_GIT_URL": f"file://{bare_remote(tmp_path / 'versions.git')}",
            "FRESHEN_GIT_WORKDIR": str(tmp_path / "git-work"),
            "FRESHEN_GIT_TOKEN": SECRETS["git token"],
            "FRESHEN_AWS_SECRET_ACCESS_KEY": SECRETS["aws secret"],
            "FRESHEN_CHECK_INTERVAL_S": "3600",
            "FRESHEN_LOG_LEVEL": "DEBUG",
        }
        pypi.set_releases(GOOD, ["8.0.0"])
        pypi.set_releases(BAD, ["8.0.0"])
        with running("secrets", env) as system, EventTap(system) as tap, Sampler() as sampler:
            good = system.app.send_task("workers.check.check_image", args=[GOOD]).get(60)
            bad_run = system.app.send_task("workers.check.check_image", args=[BAD]).get(60)
            assert system.wait_terminal(GOOD, good).status == "done"
            assert system.wait_terminal(BAD, bad_run).status == "failed"
            pypi.set_response(GOOD, status=500, body=b"down")
            system.app.send_task("workers.check.check_image", args=[GOOD]).get(60)
            errors = [getattr(r.event, "error", "") for i in (GOOD, BAD) for r in system.records(i)]
            logs = [system.log_path(p) for p in system.procs]
            images = sampler.images(f"{registry.host}/faults/")
    # The inspections cover what they claim: a test container, its moto, its network, images.
    names = [str(found.get("Name", "")) for found in sampler.inspected.values()]
    assert any(n.startswith("/freshen-test-") and not n.endswith("-moto") for n in names), names
    assert any(n.endswith("-moto") for n in names), names
    assert any("Containers" in found for found in sampler.inspected.values()), "no network seen"
    assert images, "no candidate image found to inspect"
    git_configs = [*(tmp_path / "git-work").rglob(".git/config"), tmp_path / "versions.git/config"]
    assert all(p.is_file() for p in git_configs) and len(git_configs) == 2, git_configs
    haystacks = {
        "logs": b"\n".join(p.read_bytes() for p in logs),
        "redis (events, messages, results, leases)": _redis_dump(client),
        "celery task events": json.dumps(tap.events, default=str).encode(),
        "exception texts": "\n".join(errors).encode(),
        "docker inspect (containers, networks, images)": json.dumps(
            [*sampler.inspected.values(), *images], default=str
        ).encode(),
        ".git/config": b"\n".join(p.read_bytes() for p in git_configs),
        "process command lines": b"\n".join(sampler.command_lines),
    }
    assert len(tap.events) > 10 and any(e.get("type") == "task-succeeded" for e in tap.events)
    assert any(b"celery-task-meta-" in k for k in client.keys("*"))
    assert any("check failed" in e for e in errors)
    found = [
        (what, spelling, where)
        for what, secret in SECRETS.items()
        for spelling, form in spellings(secret).items()
        for where, data in haystacks.items()
        if form in data
    ]
    figures = Figures("secrets")
    figures.add(not found, None, scanned={k: len(v) for k, v in haystacks.items()})
    figures.save()
    assert not found, found
