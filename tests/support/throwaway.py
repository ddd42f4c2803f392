"""Throw-away Redis and registry servers on free ports, for tests that restart or stop them.

The shared services on 6379 and 5000 are never touched: a test that needs Redis to restart or
the registry to go away starts its own here and points its workers at it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import redis
import requests

from tests.conftest import LOCAL_BASE

SHARED_BASE = LOCAL_BASE  # the local engine's name of the shared base image
# The one Redis configuration freshen ships (docker-compose.yml, scripts/services.sh).
REDIS_CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, redis.RedisError, requests.RequestException):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready after {timeout_s} s")


class RedisServer:
    """redis-server configured by deploy/redis.conf (exactly what compose and
    scripts/services.sh ship), on a free port, in its own folder."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The shipped configuration file; only where it listens and keeps its files added."""
        where = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder)]
        return ["redis-server", str(REDIS_CONF), *where]

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        wait_until(lambda: bool(client.ping()), 30, "redis")
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown; SIGKILL: a crash of the process (what it wrote to the
        append-only file survives in the kernel; a power cut would keep only what was fsynced)."""
        if self._proc is not None:
            self._proc.send_signal(sig)
            self._proc.wait(timeout=30)
            self._proc = None


class RegistryServer:
    """`docker-registry serve` with filesystem storage; optionally behind htpasswd basic auth,
    and then with a read-only anonymous view of the same storage on `pull_host` (as
    scripts/services.sh runs them: processes without credentials read there)."""

    def __init__(self, folder: Path, credentials: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.pull_port = free_port()
        self.folder = folder
        self.credentials = credentials
        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._view: subprocess.Popen[bytes] | None = None
        self._config = folder / "config.yml"
        self._config.write_text(self._yaml())
        self._view_config = folder / "readonly.yml"
        self._view_config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.folder / 'data'}\n"
            "  maintenance:\n    readonly:\n      enabled: true\n"
            f"http:\n  addr: {self.pull_host}\n"
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pull_host(self) -> str:
        """The read-only anonymous view (started only for a registry with credentials)."""
        return f"127.0.0.1:{self.pull_port}"

    def _yaml(self) -> str:
        text = (
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.folder / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        if self.credentials is not None:
            user, password = self.credentials
            htpasswd = self.folder / "htpasswd"
            htpasswd.write_text(f"{user}:{_bcrypt(password)}\n")
            text += f"auth:\n  htpasswd:\n    realm: faults\n    path: {htpasswd}\n"
        return text

    def start(self) -> None:
        with (self.folder / "registry.log").open("ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self._config)], stdout=log, stderr=log
            )
            if self.credentials is not None:
                self._view = subprocess.Popen(
                    ["docker-registry", "serve", str(self._view_config)], stdout=log, stderr=log
                )
        url = f"http://{self.host}/v2/"
        wait_until(lambda: requests.get(url, timeout=2).status_code in (200, 401), 30, "registry")
        if self._view is not None:
            view = f"http://{self.pull_host}/v2/"
            wait_until(lambda: requests.get(view, timeout=2).ok, 30, "read-only registry")

    def stop(self) -> None:
        for process in (self._proc, self._view):
            if process is not None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
        self._proc = self._view = None

    def push_base(self, client: docker.DockerClient) -> str:
        """Copy the shared local base image into this registry; its reference here."""
        reference = f"{self.host}/library/debian-python:bookworm"
        client.images.get(LOCAL_BASE).tag(reference)
        auth = None
        if self.credentials is not None:
            auth = {"username": self.credentials[0], "password": self.credentials[1]}
        repository, tag = reference.rsplit(":", 1)
        for line in client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=auth
        ):
            assert "error" not in line, line
        client.api.remove_image(reference)
        return reference


@contextmanager
def registry_with_base(
    folder: Path, credentials: tuple[str, str] | None = None
) -> Iterator[RegistryServer]:
    """A started throw-away registry holding a copy of the shared base image; stopped after."""
    server = RegistryServer(folder, credentials)
    server.start()
    client = docker.from_env()
    try:
        server.push_base(client)
        yield server
    finally:
        client.close()
        server.stop()


def _bcrypt(password: str) -> str:
    """A bcrypt hash (what the registry's htpasswd needs), from the system's crypt(3)."""
    code = "import crypt,sys;print(crypt.crypt(sys.argv[1],crypt.mksalt(crypt.METHOD_BLOWFISH)))"
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, password],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return out.stdout.strip()
