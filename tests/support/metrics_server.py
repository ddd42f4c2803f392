"""A real `python -m shared.metrics` process for tests, scraped over HTTP and read with
prometheus-client's own parser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A sample's key in Samples: its name and sorted labels."""
    return name, tuple(sorted(labels.items()))


@dataclass
class MetricsServer:
    process: subprocess.Popen[bytes]
    url: str

    def scrape(self) -> Samples:
        """Every sample, keyed by name and sorted labels, parsed by prometheus-client."""
        text = requests.get(self.url, timeout=30).text
        return {
            key(s.name, **s.labels): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> int:
        """SIGTERM; the exit code (0: it stopped cleanly)."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_metrics_server(redis_url: str, port: int) -> MetricsServer:
    """Start the server on `port` and wait until /metrics answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
    env |= {"FRESHEN_REDIS_URL": redis_url, "FRESHEN_METRICS_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "shared.metrics"], cwd=ROOT, env=env)
    server = MetricsServer(process, f"http://127.0.0.1:{port}/metrics")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the metrics server exited with {process.returncode}")
        try:
            requests.get(server.url, timeout=5)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError("the metrics server never answered")
