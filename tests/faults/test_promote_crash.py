"""Fault: `kill -9` of the whole promote worker between two tag writes, at every point of the
recorded plan (issue 8, test b): after the intent (PromotionPlanned, before any registry call),
after each manifest PUT, and after the last PUT (before the Promoted event).

Deterministic, not timed: the promote worker speaks to the registry through a gate that
forwards everything until armed; armed at point k it stops the run's first release-tag request
(k = 0, not forwarded) or forwards the k-th release-tag PUT and then withholds the answer, and
the test kills the worker while the request waits. Before anything recovers, the kill is shown
to have landed at its point: the plan is in the log, Promoted is not, the registry holds exactly
the first k planned tags moved, and the image's promote lease is still the dead attempt's.

Scenario per point (one image each): 1.0.0 promoted fully; 1.0.1 killed at point k; meanwhile
1.0.0.post1 (between the two in the run order) and 1.0.2 (later) are built and tested. When the
dead attempt's lease lapses, the test takes it for 1.0.0.post1's pending promote (as if its own
re-send had come first), then for 1.0.2's, so both promote while 1.0.1 is half done and 1.0.1
resumes last. That drives both registry checks: 1.0.0.post1 plans `1.0` and `latest` from the
log (which says 1.0.0) while the registry may hold them at 1.0.1, and 1.0.1's resumed plan
meets them held by 1.0.2. After recovery: every run completed, promoted and planned once; the
audit finds no drift; every tag points at the latest run in the order among those eligible for
it, in the registry and in the log; no Promoted event and no sample of a 20-50 ms sampler ever
saw a tag move to an earlier run; the versions file records `latest`'s run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from packaging.version import Version

from shared import sends
from shared.adapters import lease
from shared.constants import LEASE_PREFIX, LEASE_TTL_S, MANIFEST_ACCEPT
from shared.model.events import (
    RESUMED_NOT_STARTED,
    Promoted,
    PromotionPlanned,
    Recorded,
    ReleaseDetected,
    RunResumed,
    TagMove,
)
from shared.model.projection import RunState
from shared.stages import lease_name
from shared.stages.audit import audit_image
from shared.testing.images import bare_remote, define_quick, git
from shared.testing.system import ARTIFACTS, System, running
from shared.testing.taskevents import Background
from tests.conftest import BASE_IMAGE, PULL_REGISTRY, REGISTRY
from tests.support.registry_gate import TagWriteGate
from tests.support.registry_proxy import LoopbackServer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

POINTS = (0, 1, 2, 3, 4)  # 0: after the intent; k: after the k-th of the plan's 4 PUTs
OLD, CRASHED, BETWEEN, LATER = "1.0.0", "1.0.1", "1.0.0.post1", "1.0.2"
RESULTS = ARTIFACTS / "faults-promote-crash.json"


class TagWatch(Background):
    """Reads where each of `tags` points every few tens of milliseconds; keeps each change."""

    def __init__(self, repository: str, tags: list[str]) -> None:
        # Read anonymously: the pull registry shows each PUT to the push registry at once.
        self.urls = {t: f"http://{PULL_REGISTRY}/v2/{repository}/manifests/{t}" for t in tags}
        self.changes: list[tuple[str, str]] = []  # (tag, digest), in the order seen
        self.samples = 0
        super().__init__("tag-watch")

    def _loop(self) -> None:
        last: dict[str, str] = {}
        accept = {"Accept": ", ".join(MANIFEST_ACCEPT)}
        with requests.Session() as session:
            while not self._stop.is_set():
                for tag, url in self.urls.items():
                    try:
                        digest = session.head(url, headers=accept, timeout=1).headers.get(
                            "Docker-Content-Digest", ""
                        )
                    except requests.RequestException:
                        digest = ""
                    if digest and digest != last.get(tag):
                        last[tag] = digest
                        self.changes.append((tag, digest))
                self.samples += 1
                self._stop.wait(0.02)


@dataclass
class Rig:
    system: System
    gate: TagWriteGate
    remote: Path
    prefix: str
    suffix: str

    def image(self, point: int) -> str:
        return f"crash{point}-{self.suffix}"

    def repository(self, point: int) -> str:
        return f"{self.prefix}/crash{point}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("promote-crash")
    suffix = uuid.uuid4().hex[:8]
    prefix = f"freshen-faults-{suffix}"
    images = root / "images"
    index = "http://127.0.0.1:9/pypi"  # runs are started with a version: never asked
    for point in POINTS:
        define_quick(images, f"crash{point}-{suffix}", index, BASE_IMAGE, f"{prefix}/crash{point}",
                     test_sleep_s=0.2)  # fmt: skip
    remote = bare_remote(root / "versions.git")
    env = {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(images),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_GIT_URL": f"file://{remote}",
        "FRESHEN_GIT_WORKDIR": str(root / "git-work"),
        "FRESHEN_CHECK_INTERVAL_S": "3600",
        "FRESHEN_RECONCILE_INTERVAL_S": "1",
        "FRESHEN_BUILD_TIME_LIMIT_S": "120",
        "FRESHEN_TEST_TIME_LIMIT_S": "60",
        "FRESHEN_PROMOTE_TIME_LIMIT_S": "60",
    }
    gate = TagWriteGate(REGISTRY)
    with LoopbackServer(gate.respond) as proxy:
        promote_env = {
            "FRESHEN_PUSH_REGISTRY": proxy.host,
            "FRESHEN_INSECURE_REGISTRIES": f"{REGISTRY},{proxy.host}",
        }
        try:
            with running(
                "promote-crash", env, overrides={"promote": promote_env},
                concurrency={"build": 2, "test": 2},
            ) as system:  # fmt: skip
                rig = Rig(system, gate, remote, prefix, suffix)
                olds = [(rig.image(p), system.rebuild(rig.image(p), OLD)) for p in POINTS]
                for image, run_id in olds:
                    run = system.wait_terminal(image, run_id, timeout_s=180)
                    assert run.status == "done", f"{image} {OLD}: {run.stage} {run.error}"
                yield rig
        finally:
            gate.release.set()  # no request of the gate may outlive the test


def _run_by_version(system: System, image: str) -> dict[str, str]:
    return {r.tool_version: r.run_id for r in system.ctx.state(image).runs.values()}


def _assert_landed(system: System, image: str, run_id: str, point: int) -> None:
    """The kill came at `point`: plan recorded, no Promoted, exactly the first `point` planned
    tags moved in the registry, and the image's promote lease still the dead attempt's."""
    state = system.ctx.state(image)
    run, old = state.runs[run_id], state.runs[_run_by_version(system, image)[OLD]]
    types = [r.type for r in system.records(image, run_id)]
    assert "Promoted" not in types, f"killed at point {point} but the log has {types}"
    plans = [
        r.event for r in system.records(image, run_id) if isinstance(r.event, PromotionPlanned)
    ]
    assert len(plans) == 1, f"{run_id}: {len(plans)} PromotionPlanned"
    moves = plans[0].moves
    os_tag = f"{CRASHED}-{run.os_id}{run.os_version}"
    expected = [
        TagMove(CRASHED, "", run.digest), TagMove(os_tag, "", run.digest),
        TagMove("1.0", old.digest, run.digest), TagMove("latest", old.digest, run.digest),
    ]  # fmt: skip
    assert list(moves) == expected, f"plan {moves}"
    repository = system.ctx.definition(image).spec.target.repository
    held = [system.ctx.registry.tag_digest(REGISTRY, repository, m.tag) for m in moves]
    want = [m.to_digest if i < point else (m.from_digest or None) for i, m in enumerate(moves)]
    assert held == want, f"point {point}: registry holds {held}, expected {want}"
    holder = lease.inspect(system.ctx.redis, lease_name(image, run_id, "promote"))
    assert holder.owner == run.attempts["promote"], f"promote lease {holder}"


def _take_lease(client: redis.Redis, image: str, run_id: str, timeout_s: float = 90) -> float:
    """Hold the image's promote lease for `run_id`'s first promote attempt as soon as it is free
    (its own re-send, due within 5 s, takes it as its own); when (wall clock)."""
    name = lease_name(image, run_id, "promote")
    owner = sends.attempt_id(run_id, "promote", 0, 0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.set(LEASE_PREFIX + name, owner, nx=True, ex=LEASE_TTL_S):
            return time.time()
        if (lease.inspect(client, name).owner or "").startswith(f"{run_id}-promote-"):
            return time.time()  # its own attempt came first
        time.sleep(0.001)
    raise AssertionError(f"{image}: promote lease never free for {run_id} in {timeout_s} s")


def _at(system: System, image: str, run_id: str, kind: str) -> float:
    times = [datetime.fromisoformat(r.at).timestamp() for r in system.records(image, run_id)
             if r.type == kind]  # fmt: skip
    assert len(times) == 1, f"{run_id}: {len(times)} x {kind}"
    return times[0]


def _eligible(version: str, os_suffix: str) -> list[str]:
    parsed = Version(version)
    return [version, f"{version}-{os_suffix}", f"{parsed.major}.{parsed.minor}", "latest"]


@dataclass
class Outcome:
    """An image's log after the trial: its runs, their place in the order, who has a digest."""

    records: list[Recorded]
    runs: dict[str, RunState]
    order: dict[str, tuple[Version, int]]  # run id → (tool version, position of its detection)
    by_digest: dict[str, str]  # digest → the tested run that built it

    @classmethod
    def of(cls, system: System, image: str) -> Outcome:
        records, runs = system.records(image), dict(system.ctx.state(image).runs)
        order = {r.event.run_id: (Version(r.event.tool_version), r.position)
                 for r in records if isinstance(r.event, ReleaseDetected)}  # fmt: skip
        by_digest = {r.digest: r.run_id for r in runs.values() if r.passed_tests}
        return cls(records, runs, order, by_digest)

    def holders(self) -> dict[str, str]:
        """Tag → the latest run in the order among the tested runs eligible for it."""
        holders: dict[str, str] = {}
        for run in self.runs.values():
            for tag in _eligible(run.tool_version, f"{run.os_id}{run.os_version}"):
                if tag not in holders or self.order[run.run_id] > self.order[holders[tag]]:
                    holders[tag] = run.run_id
        return holders


def _run_problems(system: System, image: str, out: Outcome) -> list[str]:
    """Each run done, planned, promoted, committed and completed exactly once; no drift."""
    problems = []
    for run in out.runs.values():
        types = [r.type for r in out.records if getattr(r.event, "run_id", "") == run.run_id]
        if run.status != "done":
            problems.append(f"{run.tool_version}: {run.status} at {run.stage}: {run.error[:300]}")
        for kind in ("PromotionPlanned", "Promoted", "VersionsCommitted", "RunCompleted"):
            if types.count(kind) != 1:
                problems.append(f"{run.tool_version}: {types.count(kind)} x {kind}: {types}")
        # A promote waiting for the image's lease counts as queued: the reconciler never sends
        # another attempt of it (only the lost attempt of the killed run is resumed).
        resent = [
            r.event.stage
            for r in out.records
            if isinstance(r.event, RunResumed)
            and r.event.run_id == run.run_id
            and r.event.reason == RESUMED_NOT_STARTED
        ]
        if resent:
            problems.append(f"{run.tool_version}: re-sent while waiting: {resent}")
    drift = audit_image(system.ctx, image, record=False).drift
    return problems + [f"audit: {finding}" for finding in drift]


def _tag_problems(system: System, image: str, out: Outcome) -> list[str]:
    """Every tag on its rightful run, in the registry and in the log."""
    ctx, problems = system.ctx, []
    logged = ctx.state(image).tags
    repository = ctx.definition(image).spec.target.repository
    for tag, run_id in sorted(out.holders().items()):
        digest = out.runs[run_id].digest
        found = ctx.registry.tag_digest(REGISTRY, repository, tag) or ""
        if found != digest:
            problems.append(f"registry: {tag} → {out.by_digest.get(found, found)}, not {run_id}")
        if tag not in logged or (logged[tag].run_id, logged[tag].digest) != (run_id, digest):
            problems.append(f"log: {tag} → {logged.get(tag)}, not {run_id}")
    return problems


def _order_problems(out: Outcome, watches: list[TagWatch]) -> list[str]:
    """Item 1: no Promoted event, and no sample, shows a tag moving to an earlier run."""
    moves = [(tag, r.event.run_id) for r in out.records if isinstance(r.event, Promoted)
             for tag in r.event.tags]  # fmt: skip
    sampled = [(t, out.by_digest.get(d, "")) for w in watches for t, d in w.changes]
    problems = [f"sampled {t}: a digest no tested run has" for t, run_id in sampled if not run_id]
    problems += [f"only {w.samples} samples of {list(w.urls)}" for w in watches if w.samples < 100]
    for what, changes in (("Promoted", moves), ("sampled", [c for c in sampled if c[1]])):
        held: dict[str, str] = {}
        for tag, run_id in changes:
            if tag in held and out.order[run_id] <= out.order[held[tag]]:
                problems.append(f"{what}: {tag} moved back from {held[tag]} to {run_id}")
            held[tag] = run_id
    return problems


def _expected_moves(out: Outcome, point: int) -> dict[str, list[str]]:
    """What each run's Promoted must say it moved, whatever order the promotions came in: the
    registry as the runs met it (1.0.1's first `point` planned tags already moved when it was
    killed), each run moving exactly the eligible tags that no later run held."""
    version_of = {run.run_id: run.tool_version for run in out.runs.values()}
    crashed = next(r.run_id for r in out.runs.values() if r.tool_version == CRASHED)
    plan = next(
        r.event
        for r in out.records
        if isinstance(r.event, PromotionPlanned) and r.event.run_id == crashed
    )
    holder: dict[str, str] = {}
    expected: dict[str, list[str]] = {}
    for record in out.records:
        event = record.event
        if isinstance(event, PromotionPlanned) and event.run_id == crashed:
            holder |= {move.tag: crashed for move in plan.moves[:point]}
        if not isinstance(event, Promoted):
            continue
        run = out.runs[event.run_id]
        moved = [
            tag
            for tag in _eligible(run.tool_version, f"{run.os_id}{run.os_version}")
            if tag not in holder
            or holder[tag] == run.run_id
            or out.order[holder[tag]] < out.order[run.run_id]
        ]
        holder |= dict.fromkeys(moved, run.run_id)
        expected[version_of[run.run_id]] = moved
    return expected


def _scenario_problems(remote: Path, image: str, out: Outcome, point: int) -> list[str]:
    """Each run moved exactly the tags the registry let it move, given the order the runs
    really promoted in (the test forces 1.0.0.post1 and 1.0.2 to come first, but 1.0.1's own
    resumed attempt may win the lease); the versions file records `latest`'s run."""
    expected = _expected_moves(out, point)
    problems = []
    for run in out.runs.values():
        want = expected.get(run.tool_version)
        if want is not None and run.tags != want:
            problems.append(f"{run.tool_version} moved {run.tags} (kept {run.kept}), not {want}")
    latest = out.runs[out.holders()["latest"]]
    versions = json.loads(git(remote, "show", f"main:versions/{image}.json"))
    if versions["run_id"] != latest.run_id:
        problems.append(f"versions file: {versions['version']}, latest: {latest.tool_version}")
    return problems


def _save(point: int, figures: dict[str, Any]) -> None:
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc[str(point)] = {**figures, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.write_text(json.dumps(doc, indent=1, sort_keys=True))


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_between_tag_writes(rig: Rig, point: int) -> None:
    s, image, repository = rig.system, rig.image(point), rig.repository(point)
    old = s.ctx.state(image).runs[_run_by_version(s, image)[OLD]]
    os_suffix = f"{old.os_id}{old.os_version}"
    tags = sorted({t for v in (OLD, CRASHED, BETWEEN, LATER) for t in _eligible(v, os_suffix)})
    moving = ["1.0", "latest"]  # sampled on their own, every 20-50 ms
    watches = [TagWatch(repository, moving), TagWatch(repository, sorted(set(tags) - set(moving)))]
    started = time.monotonic()
    with ExitStack() as stack:
        for watch in watches:
            stack.enter_context(watch)
        stack.callback(rig.gate.release.set)  # a failed trial lets its stopped request go
        rig.gate.arm(repository, point)
        crashed = s.rebuild(image, CRASHED)
        assert rig.gate.hit.wait(rig.gate.wait_s), (
            f"point {point}: the gate never stopped a request"
        )
        killed_at = s.kill_worker("promote")  # and restarted, as a supervisor would
        _assert_landed(s, image, crashed, point)
        rig.gate.release.set()
        between, later = s.rebuild(image, BETWEEN), s.rebuild(image, LATER)
        lapsed_at = _take_lease(s.ctx.redis, image, between)
        s.wait_terminal(image, between, timeout_s=90)
        _take_lease(s.ctx.redis, image, later)
        s.wait_terminal(image, later, timeout_s=90)
        s.wait_terminal(image, crashed, timeout_s=90)
        time.sleep(0.2)  # a last sample after the last move
    sampled_s = time.monotonic() - started
    recover_s = _at(s, image, crashed, "RunCompleted") - killed_at
    out = Outcome.of(s, image)
    problems = _run_problems(s, image, out) + _tag_problems(s, image, out)
    problems += _order_problems(out, watches) + _scenario_problems(rig.remote, image, out, point)
    figures = {
        "passed": not problems,
        "recover_s": round(recover_s, 1),
        "lease_lapsed_s": round(lapsed_at - killed_at, 1),
        "samples": [w.samples for w in watches],
        "sample_interval_ms": round(1000 * sampled_s / max(watches[0].samples, 1)),
        "promoted": {r.tool_version: {"tags": r.tags, "kept": r.kept} for r in out.runs.values()},
        "problems": problems,
    }
    print(f"point {point}: recovered in {recover_s:.1f} s (lease lapsed after "
          f"{lapsed_at - killed_at:.1f} s); samples {figures['samples']}, "
          f"{figures['sample_interval_ms']} ms apart")  # fmt: skip
    _save(point, figures)
    assert not problems, problems
