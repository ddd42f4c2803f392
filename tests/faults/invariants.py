"""The promises every fault test checks after the fault, and the figures it reports."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests

from shared.constants import MANIFEST_ACCEPT
from shared.context import Context
from shared.model.events import TestsPassed
from shared.model.projection import comparable, replay
from shared.testing.images import git
from shared.testing.system import ARTIFACTS, System
from shared.testing.taskevents import Background

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
    """What the run's tests left on the engine: test or moto containers, test networks (all
    named `freshen-test-<image>-<test id>…`, the test id starting with the run id)."""
    name = f"freshen-test-{image}-{run_id}"
    client = docker.from_env()
    try:
        left = client.api.containers(all=True, filters={"name": name})
        networks = client.api.networks(filters={"name": name})
    finally:
        client.close()
    return [f"container left: {c['Names']} {c['State']}" for c in left] + [
        f"test network left: {n['Name']}" for n in networks
    ]


def replay_problems(ctx: Context, tries: int = 40) -> list[str]:
    """Images whose live state differs from their log folded from scratch.

    Compared when the log stands still (the same positions in a replay before and after the
    live read), so a run still moving in the background cannot make the comparison flaky.
    """
    for _ in range(tries):
        before = replay(ctx.store)
        live = ctx.projections.all()
        after = replay(ctx.store)
        if {n: s.position for n, s in before.items()} == {n: s.position for n, s in after.items()}:
            break
        time.sleep(0.25)
    else:
        return [f"the event log never stood still for {tries} replays"]
    problems = [
        f"{n}: live but not replayed, or replayed but not live" for n in set(before) ^ set(live)
    ]
    for name in sorted(set(before) & set(live)):
        replayed, held = comparable(before[name]), comparable(live[name])
        differ = sorted(k for k in replayed.keys() | held.keys() if replayed.get(k) != held.get(k))
        if differ:
            problems.append(f"{name}: live state differs from replay in {differ}")
    return problems


def digests_that_passed(system: System, image: str) -> set[str]:
    return {r.event.digest for r in system.records(image) if isinstance(r.event, TestsPassed)}


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
