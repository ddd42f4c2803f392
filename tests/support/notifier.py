"""A real `python -m shared.notify` process for tests, and real events for it to notify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from shared.adapters.eventstore import EventStore
from shared.constants import GLOBAL_STREAM, NOTIFY_GROUP
from shared.model import events as ev

ROOT = Path(__file__).resolve().parents[2]
BASE = "sha256:" + "b" * 64
OLD = "sha256:" + "0" * 64


class NotifierProcess:
    """The notifier with exactly the FRESHEN_* settings given; its log in `log_path`."""

    def __init__(self, redis_url: str, log_path: Path, **settings: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
        self.env |= {"FRESHEN_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        self.env |= {f"FRESHEN_{k.upper()}": v for k, v in settings.items()}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        started = self.log().count(" targets ")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.notify"], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis.from_url(self.env["FRESHEN_REDIS_URL"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            groups = client.xinfo_groups(GLOBAL_STREAM) if client.exists(GLOBAL_STREAM) else []
            ready = self.log().count(" targets ") > started
            if ready and any(g["name"].decode() == NOTIFY_GROUP for g in groups):
                client.close()
                return
            time.sleep(0.05)
        raise AssertionError(f"the notifier did not start:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def append(store: EventStore, image: str, *new: ev.Event) -> None:
    store.append(image, list(new), store.length(image))


def failed_run(store: EventStore, image: str, run_id: str, version: str) -> str:
    """A run whose `s3-cp` test failed; its digest."""
    digest = "sha256:" + run_id.encode().hex().ljust(64, "a")[:64]
    results = (
        ev.StepRecord("aws --version", 0, f"aws-cli/{version}"),
        ev.StepRecord("s3-cp", 1, "upload failed: ./f to s3://b/f\nAccessDenied (line 2)"),
    )
    append(store, image, ev.ReleaseDetected(run_id, version, "python:3.12", BASE, "check"))
    append(store, image, ev.BuildStarted(run_id, "a1"))
    append(store, image, ev.BuildSucceeded(run_id, digest, "debian", "12"))
    append(store, image, ev.TestStarted(run_id, "a2"))
    tail = "upload failed: ./f to s3://b/f\nAccessDenied (line 2)"
    append(store, image, ev.TestsFailed(run_id, digest, "s3-cp", tail, results))
    return digest


def promoted_run(store: EventStore, image: str, run_id: str, version: str) -> str:
    """A run promoted to X.Y.Z (new), X.Y and latest (both moved from OLD); its digest."""
    digest = "sha256:" + run_id.encode().hex().ljust(64, "c")[:64]
    minor = version.rsplit(".", 1)[0]
    append(store, image, ev.ReleaseDetected(run_id, version, "python:3.12", BASE, "check"))
    append(store, image, ev.BuildStarted(run_id, "p1"))
    append(store, image, ev.BuildSucceeded(run_id, digest, "debian", "12"))
    append(store, image, ev.TestStarted(run_id, "p2"))
    append(store, image, ev.TestsPassed(run_id, digest, ()))
    append(store, image, ev.PromotionStarted(run_id, "p3"))
    moves = (
        ev.TagMove(version, "", digest),
        ev.TagMove(minor, OLD, digest),
        ev.TagMove("latest", OLD, digest),
    )
    append(store, image, ev.PromotionPlanned(run_id, "p3", moves, ()))
    append(store, image, ev.Promoted(run_id, digest, version, (version, minor, "latest")))
    return digest
