"""A throw-away redis-server started from deploy/redis.conf, the configuration freshen ships.

Only where it listens and keeps its files is added on the command line (as docker-compose.yml,
scripts/services.sh and the fault suite do); a benchmark that compares settings changes them at
run time with CONFIG SET, so the start-up configuration is always the shipped one.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

from bench.common import ROOT

# The one Redis configuration freshen ships.
REDIS_CONF = ROOT / "deploy" / "redis.conf"
READY_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """redis-server on a free port with its files in `folder`; stopped with SIGTERM."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return self._proc.pid

    def command(self) -> list[str]:
        where = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder)]
        return ["redis-server", str(REDIS_CONF), *where]

    def start(self) -> redis.Redis:
        """Start it; a client once it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "redis.log").open("ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return client
            except redis.ConnectionError:
                time.sleep(0.05)
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.folder / 'redis.log'}")
        raise RuntimeError(f"redis-server not answering after {READY_S} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
