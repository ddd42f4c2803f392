"""The promises every fault test checks after the fault, and the figures it reports."""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import boto3
import docker
import requests

from shared.constants import MANIFEST_ACCEPT
from shared.events import TestsPassed
from tests.faults.images import git
from tests.faults.system import ARTIFACTS, System

TERMINAL = ("RunCompleted", "BuildFailed", "TestsFailed", "PromotionFailed")
FIGURES = ARTIFACTS / "faults-figures.json"


def run_problems(system: System, image: str, run_id: str, remote: Path | None) -> list[str]:
    """Everything wrong with a finished run: outcome, event counts, tags, git, containers."""
    run = system.ctx.state(image).runs[run_id]
    types = [r.type for r in system.records(image, run_id)]
    problems = []
    if run.status != "done":
        problems.append(f"run ended {run.status} at {run.stage}: {run.error[:300]}")
    if sum(types.count(t) for t in TERMINAL) != 1:
        problems.append(f"terminal events: {types}")
    for kind in ("ReleaseDetected", "BuildSucceeded", "TestsPassed", "Promoted"):
        if types.count(kind) != 1:
            problems.append(f"{types.count(kind)} x {kind}: {types}")
    repository = system.ctx.definition(image).spec.target.repository
    registry = system.settings.push_registry
    for tag in run.tags:
        pointed = system.ctx.registry.tag_digest(registry, repository, tag)
        if pointed != run.digest:
            problems.append(f"tag {tag} → {pointed}, not the run's {run.digest}")
    if remote is not None:
        problems += git_problems(remote, run_id, run.git_tag, run.commit)
    problems += container_problems(image, run_id)
    return problems


def git_problems(remote: Path, run_id: str, tag: str, commit: str) -> list[str]:
    commits = git(remote, "log", "--format=%H", f"--grep=Freshen-Run: {run_id}", "main").split()
    tags = [t for t in git(remote, "tag", "-l").split() if run_id[:8] in t]
    problems = []
    if commits != [commit]:
        problems.append(f"git commits of the run: {commits}, recorded {commit}")
    if tags != [tag] or git(remote, "rev-parse", f"{tag}^{{commit}}") != commit:
        problems.append(f"git tags of the run: {tags}, recorded {tag}")
    return problems


def container_problems(image: str, run_id: str) -> list[str]:
    client = docker.from_env()
    try:
        left = client.api.containers(all=True, filters={"name": f"freshen-test-{image}-{run_id}"})
    finally:
        client.close()
    return [f"test container left: {c['Names']} {c['State']}" for c in left]


def moto_orphans(endpoint: str, run_id: str) -> list[str]:
    """Buckets and live instances the run's tests left in moto (their names carry the run id)."""
    options: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3 = boto3.client("s3", **options)
    ec2 = boto3.client("ec2", **options)
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    orphans = [f"bucket {b}" for b in buckets if b.startswith(f"freshen-test-{run_id}")]
    reply = ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["freshen-test"]}])
    for reservation in reply["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            live = instance["State"]["Name"] in ("pending", "running")
            if live and tags.get("freshen-test", "").startswith(run_id):
                orphans.append(f"instance {instance['InstanceId']}")
    return orphans


def digests_that_passed(system: System, image: str) -> set[str]:
    return {r.event.digest for r in system.records(image) if isinstance(r.event, TestsPassed)}


class Background:
    """`with` runs `_loop` in a thread until the block ends; `_loop` watches `self._stop`."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        raise NotImplementedError


class TagSampler(Background):
    """Reads what a tag points at every few milliseconds, from another thread, until stopped."""

    def __init__(self, registry: str, repository: str, tag: str = "latest") -> None:
        self.url = f"http://{registry}/v2/{repository}/manifests/{tag}"
        self.seen: dict[str, int] = {}
        self.samples = 0
        super().__init__("tag-sampler")

    def _loop(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    reply = session.head(
                        self.url, headers={"Accept": ", ".join(MANIFEST_ACCEPT)}, timeout=1
                    )
                    digest = reply.headers.get("Docker-Content-Digest")
                except requests.RequestException:
                    digest = None
                self.samples += 1
                if digest:
                    self.seen[digest] = self.seen.get(digest, 0) + 1
                self._stop.wait(0.02)


@dataclass
class Figures:
    """Trials of one fault: passes and seconds to recover, saved for RELIABILITY.md."""

    fault: str
    trials: list[dict[str, Any]] = field(default_factory=list)

    def add(self, passed: bool, recover_s: float | None = None, **detail: Any) -> None:
        self.trials.append({"passed": passed, "recover_s": recover_s, **detail})

    def save(self) -> None:
        times = [t["recover_s"] for t in self.trials if t["recover_s"] is not None]
        doc = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        doc[self.fault] = {
            "trials": len(self.trials),
            "passes": sum(1 for t in self.trials if t["passed"]),
            "recover_s": {
                "min": round(min(times), 1),
                "median": round(statistics.median(times), 1),
                "max": round(max(times), 1),
            }
            if times
            else None,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "detail": self.trials,
        }
        FIGURES.write_text(json.dumps(doc, indent=1, sort_keys=True))
