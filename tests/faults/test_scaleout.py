"""Scale-out on two engines (issue 8, test a).

Two Docker Engines on this machine (the second one from `scripts/services.sh`: its own socket,
data root, exec root and pid file; they share only the registry), a build worker and a test
worker on each, a check worker and two promote workers. Two images, 16 runs started within
seconds: every release of each image on the first base; then the base changes under the same
tag while those are in flight, the last two non-newest releases started of each image are
rebuilt on it and the check worker starts the newest release on it; then the base changes again
and the check worker starts the newest release on that one too. Tests on the first base sleep
longer, so a run of a release on an older base ends its tests after the run on a newer one.

A sampler reads every tag of both repositories every 50 ms all along. Then:
(i) every release tag only ever pointed at its own run's candidate (by the run id label of the
    image), after that run's tests passed on it, and the tag admits the run's version and OS;
(ii) no tag ever moved to a run earlier in the order (tool version, then detection), neither
    as sampled nor in the log's Promoted events;
(iii) the audit finds no drift; (iv) no run was promoted twice; (v) replay equals live state;
and every release tag ends on the newest run in the order that passed its tests and may hold it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from celery import Celery
from packaging.version import Version

from shared.context import Context, build_context
from shared.model.projection import comparable, replay
from shared.stages.audit import audit_image
from shared.stages.check import read_upstream, start_run
from shared.testing.pypi_server import PyPIServer
from shared.testing.services import settings_from, shared_registry_env
from shared.testing.system import ARTIFACTS
from shared.testing.taskevents import TaskEvents
from shared.testing.workers import Worker, Workers
from tests.conftest import PULL_REGISTRY, REGISTRY
from tests.faults import scaleout as so
from tests.faults.scaleout import ENGINES
from workers.app import celery_config

pytestmark = [pytest.mark.faults, pytest.mark.timeout(480)]

RELEASES = {
    "alpha": ["1.0.0", "1.0.1", "1.1.0", "2.0.0"],
    "beta": ["0.9.0", "1.0.0", "1.1.0", "1.2.0"],
}
RUNS = 16  # 8 on the first base, 4 + 2 on the second, 2 on the third
SLOW_TEST_S = 12  # the test script's sleep on the first base
FAST_TEST_S = 0.5  # and on every later one
BUILD, CHECK = "workers.build.build", "workers.check.check_image"
# Workers start at once: none waits to sync with the others (mingle) or follows them (gossip).
NO_MINGLE = ("--without-mingle", "--without-gossip")
WORKERS = (
    Worker("check", "check", 2),
    Worker("build-e1", "build", 2, ENGINES["e1"]),
    Worker("build-e2", "build", 2, ENGINES["e2"]),
    Worker("test-e1", "test", 4, ENGINES["e1"]),
    Worker("test-e2", "test", 4, ENGINES["e2"]),
    Worker("promote-1", "promote", 1),
    Worker("promote-2", "promote", 1),
)
UNTESTED = "(i) a release tag pointed at a digest that had not passed its own run's tests"
BACKWARD = "(ii) a tag moved to a run earlier in the order"
DRIFT = "(iii) the audit found drift"
TWICE = "(iv) a run was promoted more than once"
REPLAY = "(v) replay differs from the live state"
FINAL = "release tags that did not end on the newest tested run"
UNFINISHED = "runs that did not complete"


@dataclass
class Rig:
    workers: Workers
    ctx: Context
    bases: so.Bases
    repositories: dict[str, str]  # image → repository
    releases: dict[str, list[str]]  # image → its releases on the PyPI stand-in
    engine1: docker.DockerClient


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Rig]:
    for name, host in ENGINES.items():
        client = docker.DockerClient(base_url=host)
        try:
            assert client.ping(), f"engine {name} ({host}) is down: run bash scripts/services.sh"
        finally:
            client.close()
    root = tmp_path_factory.mktemp("scaleout")
    suffix = uuid.uuid4().hex[:8]
    prefix = f"freshen-faults-{suffix}"
    engine1 = docker.DockerClient(base_url=ENGINES["e1"])
    bases = so.Bases(REGISTRY, PULL_REGISTRY, f"{prefix}/base", root / "bases", FAST_TEST_S)
    releases = {f"{name}-{suffix}": versions for name, versions in RELEASES.items()}
    repositories = {image: f"{prefix}/{image.split('-')[0]}" for image in releases}
    try:
        bases.prepare(engine1, generations=3)
        bases.push(engine1, 0)
        with PyPIServer() as pypi:
            for image, versions in releases.items():
                so.define(
                    root / "images",
                    image,
                    pypi.index,
                    bases.pull_reference,
                    repositories[image],
                    SLOW_TEST_S,
                )
                pypi.set_releases(image, versions)
            with _cluster(redis_url, root / "images") as (workers, ctx):
                yield Rig(workers, ctx, bases, repositories, releases, engine1)
    finally:
        engine1.close()
        so.remove_images(prefix)


@contextmanager
def _cluster(redis_url: str, images: Path) -> Iterator[tuple[Workers, Context]]:
    env = {
        "FRESHEN_REDIS_URL": redis_url,
        "FRESHEN_IMAGES_DIR": str(images),
        "FRESHEN_PUSH_REGISTRY": REGISTRY,
        "FRESHEN_CHECK_INTERVAL_S": "3600",
        "FRESHEN_BUILD_TIME_LIMIT_S": "120",
        "FRESHEN_TEST_TIME_LIMIT_S": "60",
        "FRESHEN_PROMOTE_TIME_LIMIT_S": "60",
    }
    env |= shared_registry_env(env)
    settings = settings_from(env)
    ctx = build_context(settings)
    app = Celery("freshen-scaleout", set_as_current=False)
    app.conf.update(celery_config(settings))
    logs, host = ARTIFACTS / "faults", f"scaleout-{uuid.uuid4().hex[:6]}"
    workers = Workers(app, env, logs, host, "scaleout-", options=NO_MINGLE)
    try:
        workers.start(*WORKERS)  # all at once, then wait for every one
        workers.wait_ready()
        yield workers, ctx
    finally:
        workers.stop()
        app.close()
        ctx.redis.close()


# Driving the runs.


def _rebuild(rig: Rig, image: str, version: str) -> str:
    """Start the run of `version` on the base as it is now and send its build."""
    definition = rig.ctx.definition(image)
    upstream = read_upstream(rig.ctx, definition, version)
    run_id, started = start_run(rig.ctx, definition, upstream, "rebuild", False)
    assert started, f"{image} {version}: these inputs already had run {run_id}"
    rig.workers.app.send_task(BUILD, args=[image, run_id])
    return run_id


def _runs(rig: Rig) -> dict[str, dict[str, so.Run]]:
    return {image: so.runs_from(rig.ctx.store.read(image)) for image in rig.releases}


def _open_runs(rig: Rig) -> int:
    return sum(1 for runs in _runs(rig).values() for r in runs.values() if not r.terminal)


def _wait_checked(rig: Rig, image: str, base_digest: str, timeout_s: float = 60) -> None:
    """Wait until a check started a run of `image` on `base_digest`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = so.runs_from(rig.ctx.store.read(image)).values()
        if any(r.reason == "check" and r.base_digest == base_digest for r in runs):
            return
        time.sleep(0.05)
    raise AssertionError(f"{image}: no check started a run on base {base_digest}")


def _wait_finished(rig: Rig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for image_runs in _runs(rig).values() for r in image_runs.values()]
        if len(runs) >= RUNS and all(r.terminal for r in runs):
            return
        time.sleep(0.2)
    left = [so.describe(r) for rs in _runs(rig).values() for r in rs.values() if not r.terminal]
    raise AssertionError(f"runs not finished after {timeout_s} s: {left}")


def _start_runs(rig: Rig, rng: random.Random) -> dict[str, Any]:
    """All releases on base generation 0, in a shuffled order; generation 1 while they are in
    flight, with reruns and a check; generation 2 with a check. Figures of what happened."""
    order = [(image, v) for image, versions in rig.releases.items() for v in versions]
    rng.shuffle(order)
    for image, version in order:
        _rebuild(rig, image, version)
    in_flight = [_open_runs(rig)]
    rig.bases.push(rig.engine1, 1)
    again = {}
    for image, versions in rig.releases.items():
        newest = max(versions, key=Version)
        again[image] = [v for i, v in order if i == image and v != newest][-2:]
        rig.workers.app.send_task(CHECK, args=[image])
        for version in again[image]:
            _rebuild(rig, image, version)
    for image in rig.releases:
        _wait_checked(rig, image, rig.bases.pushed[1])
    in_flight.append(_open_runs(rig))
    rig.bases.push(rig.engine1, 2)
    for image in rig.releases:
        rig.workers.app.send_task(CHECK, args=[image])
    for image in rig.releases:
        _wait_checked(rig, image, rig.bases.pushed[2])
    return {"again_on_second_base": again, "runs_open_at_base_changes": in_flight}


# Reading what happened.


def _run_label(rig: Rig, image: str, digest: str) -> str:
    """The run id label of an image in the registry: the run that built it."""
    config = rig.ctx.registry.image_config(REGISTRY, rig.repositories[image], digest)
    return str((config.get("config", {}).get("Labels") or {}).get(so.RUN_LABEL, ""))


def _owners(rig: Rig, runs: dict[str, dict[str, so.Run]], seen: list[so.Seen]) -> dict[str, str]:
    """digest → id of the run that built it, for every digest sampled or recorded as built."""
    digests = {(s.image, s.digest) for s in seen}
    digests |= {(i, d) for i, rs in runs.items() for r in rs.values() for d in r.built}
    return {digest: _run_label(rig, image, digest) for image, digest in digests}


def _overlap(rig: Rig, engines: dict[str, str]) -> dict[str, Any]:
    """Runs in flight and builds at once (overall, per engine, across engines), in the order of
    the global log; `engines`: build attempt (task id) → engine."""
    open_runs: set[str] = set()
    building: dict[str, str] = {}  # run → engine
    figures = {"most_runs_in_flight": 0, "most_builds_at_once": 0, "cross_engine_starts": 0}
    per_engine = dict.fromkeys(ENGINES, 0)
    for r in rig.ctx.store.read_all():
        run_id = getattr(r.event, "run_id", "")
        if r.type == "ReleaseDetected":
            open_runs.add(run_id)
        elif r.type in so.TERMINAL:
            open_runs.discard(run_id)
        elif r.type == "BuildStarted":
            building[run_id] = engines.get(r.event.attempt, "?")
            # A build started while the other engine was building too.
            figures["cross_engine_starts"] += len(set(building.values()) & set(ENGINES)) == 2
        elif r.type == "BuildSucceeded":
            building.pop(run_id, None)
        figures["most_runs_in_flight"] = max(figures["most_runs_in_flight"], len(open_runs))
        figures["most_builds_at_once"] = max(figures["most_builds_at_once"], len(building))
        for engine in per_engine:
            at_once = sum(1 for e in building.values() if e == engine)
            per_engine[engine] = max(per_engine[engine], at_once)
    return {**figures, "most_builds_at_once_per_engine": per_engine}


def _audit(ctx: Context, image: str) -> list[str]:
    report = audit_image(ctx, image)
    return [f"{image}: {finding}" for finding in report.drift]


def _replay_differences(ctx: Context) -> list[str]:
    """Where the live projection and a replay from scratch disagree (image, field, run)."""
    live = {name: comparable(state) for name, state in ctx.projections.all().items()}
    replayed = {name: comparable(state) for name, state in replay(ctx.store).items()}
    differences = []
    for image in sorted(set(live) | set(replayed)):
        a, b = live.get(image, {}), replayed.get(image, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) == b.get(key):
                continue
            if key == "runs":
                runs = [r for r in set(a[key]) | set(b[key]) if a[key].get(r) != b[key].get(r)]
                differences += [
                    f"{image}: run {r}: live {a[key].get(r)}, replayed {b[key].get(r)}"
                    for r in sorted(runs)
                ]
            else:
                differences.append(f"{image}: {key}: live {a.get(key)!r}, replayed {b.get(key)!r}")
    return differences


def _final_tags(rig: Rig, image: str, runs: dict[str, so.Run], owner: dict[str, str]) -> list[str]:
    """Every release tag ends on the newest run in the order that passed and may hold it."""
    host, repository = PULL_REGISTRY, rig.repositories[image]
    final = so.release_tags_now(rig.ctx.registry, host, repository)
    want = so.expected_tags(runs, so.release_tags_of(runs))
    ends = {tag: so.describe(runs.get(owner.get(d, "")), d) for tag, d in final.items()}
    problems = [
        f"{image}:{tag} ends on {ends.get(tag, 'nothing')}, not on "
        f"{so.describe(runs.get(owner.get(digest, '')), digest)}"
        for tag, digest in sorted(want.items())
        if final.get(tag) != digest
    ]
    return problems + [f"{image}:{tag} exists (→ {ends[tag]})" for tag in set(final) - set(want)]


def _problems(
    rig: Rig, runs: dict[str, dict[str, so.Run]], seen: list[so.Seen], owner: dict[str, str]
) -> dict[str, list[str]]:
    """Everything that broke an invariant, by invariant."""
    found: dict[str, list[str]] = {k: [] for k in (UNTESTED, BACKWARD, DRIFT, TWICE, REPLAY)}
    found |= {FINAL: [], UNFINISHED: []}
    for image, image_runs in runs.items():
        sampled = [s for s in seen if s.image == image]
        untested, backward = so.sampled_problems(sampled, image_runs, owner)
        found[UNTESTED] += untested + so.candidate_problems(image_runs, owner)
        log = rig.ctx.store.read(image)
        found[BACKWARD] += backward + so.logged_order_problems(image, log, image_runs)
        found[DRIFT] += _audit(rig.ctx, image)
        found[FINAL] += _final_tags(rig, image, image_runs, owner)
        for run in image_runs.values():
            if len(run.promoted) > 1:
                found[TWICE].append(f"{so.describe(run)}: {run.promoted}")
            if run.terminal != ["RunCompleted"]:
                found[UNFINISHED].append(f"{so.describe(run)}: {run.terminal}")
    found[REPLAY] += _replay_differences(rig.ctx)
    return found


def _figures(
    rig: Rig,
    runs: dict[str, dict[str, so.Run]],
    engines: dict[str, str],
    samplers: list[so.TagSampler],
) -> dict[str, Any]:
    every_run = [run for image_runs in runs.values() for run in image_runs.values()]
    built_on = {r.run_id: engines.get(r.build_attempts[-1], "?") for r in every_run if r.built}
    return {
        "runs": len(every_run),
        **_overlap(rig, engines),
        "builds_per_engine": {e: list(built_on.values()).count(e) for e in (*ENGINES, "?")},
        "sampler": {
            "sweeps": sum(s.sweeps for s in samplers),
            "tag_reads": sum(s.reads for s in samplers),
            "changes_seen": sum(len(s.changes) for s in samplers),
            "longest_gap_s": round(max(s.longest_gap_s for s in samplers), 3),
        },
        "runs_detail": [
            {
                "image": r.image,
                "run": r.run_id,
                "version": r.version,
                "seq": r.seq,
                "reason": r.reason,
                "base": r.base_digest[7:19],
                "engine": built_on.get(r.run_id),
                "terminal": r.terminal,
            }
            for r in every_run
        ],
    }


def test_two_engines_many_runs_tags_only_move_forward(rig: Rig) -> None:
    started = time.monotonic()
    seed = random.randrange(1 << 32)
    samplers = [so.TagSampler(rig.ctx.settings, i, r) for i, r in rig.repositories.items()]
    with TaskEvents(rig.workers.app) as tap, ExitStack() as sampling:
        for sampler in samplers:
            sampling.enter_context(sampler)
        time.sleep(0.5)  # the tap listens before the first task starts
        scenario = _start_runs(rig, random.Random(seed))
        _wait_finished(rig, timeout_s=300)
        time.sleep(0.5)  # a last sweep sees the final tags
    failures = [t.failure for t in (tap, *samplers) if t.failure is not None]
    assert not failures, failures
    pipeline_s = round(time.monotonic() - started, 1)

    runs = _runs(rig)
    seen = [change for sampler in samplers for change in sampler.changes]
    started_by = tap.hostnames().items()
    engines = {task: so.engine_of(rig.workers.worker_of(node)) for task, node in started_by}
    owner = _owners(rig, runs, seen)
    problems = _problems(rig, runs, seen, owner)
    figures = {"seed": seed, "pipeline_s": pipeline_s, **scenario}
    figures |= _figures(rig, runs, engines, samplers)
    figures["problems"] = {k: len(v) for k, v in problems.items()}
    (ARTIFACTS / "faults" / "scaleout-figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "runs_detail"}, indent=1))

    assert figures["runs"] == RUNS, figures
    assert figures["most_runs_in_flight"] >= 8, figures
    assert min(scenario["runs_open_at_base_changes"]) >= 1, figures
    assert all(figures["builds_per_engine"][e] >= 1 for e in ENGINES), figures
    assert figures["cross_engine_starts"] >= 1, figures
    broken = {k: v for k, v in problems.items() if v}
    assert not broken, "\n".join(f"{k}:\n  " + "\n  ".join(v[:20]) for k, v in broken.items())
