"""Harness of the two-engine scale-out test: the quick image definition, a base image that
changes under one tag, a sampler of every release tag in the registry, and the facts about runs
read from the event log with the invariants checked on them. The workers (one per engine for
build and test) are shared/testing/workers.py's; the second engine is the one
`scripts/services.sh` starts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import requests
from packaging.version import Version

from shared.adapters.containeroutput import STEP_FUNCTION
from shared.adapters.registry import RegistryClient
from shared.config import Settings, read_registry
from shared.testing.taskevents import Background
from shared.testing.workers import Worker
from tests.conftest import registry_auth
from tests.support.throwaway import SHARED_BASE

# The two engines: the default one and the one scripts/services.sh starts beside it.
ENGINES = {"e1": "unix:///var/run/docker.sock", "e2": "unix:///run/freshen-docker2.sock"}
# The test script sleeps this long on bases that do not say otherwise (the first generation),
# so runs on an older base finish their tests after runs of the same release on a newer one.
SLEEP_FILE = "/etc/freshen-scaleout-sleep"
DOCKERFILE = 'ARG BASE\nFROM ${BASE}\nARG VERSION\nRUN echo "$VERSION" > /version\n'
TEST_SCRIPT = (
    "#!/bin/sh\nset -u\n"
    + STEP_FUNCTION
    + """step version cat /version || exit 1
step work sh -c 'sleep "$(cat FILE 2>/dev/null || echo SLOW)"' || exit 1
"""
)
RUN_LABEL = "io.freshen.run-id"
TERMINAL = ("RunCompleted", "BuildFailed", "TestsFailed", "PromotionFailed")


def define(
    images: Path, name: str, index: str, base: str, repository: str, slow_test_s: float
) -> None:
    """A tool image whose build is one RUN and whose test sleeps per base (see SLEEP_FILE)."""
    folder = images / name
    folder.mkdir(parents=True)
    (folder / "image.toml").write_text(
        f'[source]\npypi = "{name}"\nindex = "{index}"\n\n[base]\nimage = "{base}"\n\n'
        f'[target]\nrepository = "{repository}"\n'
    )
    (folder / "Dockerfile").write_text(DOCKERFILE)
    script = TEST_SCRIPT.replace("FILE", SLEEP_FILE).replace("SLOW", f"{slow_test_s:g}")
    (folder / "test.sh").write_text(script)


# The registry: the base image that changes, and what every tag points at over time.


class Bases:
    """Generations of a base image pushed one after another under the same tag.

    Generation 0 is the shared Debian + Python base as it is; each later one adds a layer that
    makes the quick test sleep `fast_test_s` and a label with its number.
    """

    def __init__(
        self, registry: str, pull_registry: str, repository: str, folder: Path, fast_test_s: float
    ) -> None:
        self.reference = f"{registry}/{repository}:bookworm"  # pushed with the credentials
        self.pull_reference = f"{pull_registry}/{repository}:bookworm"  # what definitions read
        self.folder = folder
        self.fast_test_s = fast_test_s
        self.local: list[str] = []  # local image id per generation
        self.pushed: list[str] = []  # registry digest per pushed generation

    def prepare(self, client: docker.DockerClient, generations: int) -> None:
        """Build the generations locally (nothing pushed yet)."""
        self.local = [client.images.get(SHARED_BASE).id]
        for number in range(1, generations):
            context = self.folder / f"gen{number}"
            context.mkdir(parents=True)
            (context / "sleep").write_text(f"{self.fast_test_s:g}\n")
            (context / "Dockerfile").write_text(
                f"FROM {self.local[-1]}\nCOPY sleep {SLEEP_FILE}\n"
                f'LABEL io.freshen.scaleout.base-generation="{number}"\n'
            )
            image, _ = client.images.build(path=str(context), rm=True)
            self.local.append(str(image.id))

    def push(self, client: docker.DockerClient, generation: int) -> str:
        """Point the base tag at a generation; the digest it now has."""
        repository, tag = self.reference.rsplit(":", 1)
        client.api.tag(self.local[generation], repository, tag)
        digests = []
        auth = registry_auth()
        for line in client.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
            assert "error" not in line, line
            digests += [line["aux"]["Digest"]] if "Digest" in line.get("aux", {}) else []
        assert digests, f"pushing {self.reference} reported no digest"
        self.pushed.append(digests[-1])
        return digests[-1]


@dataclass(frozen=True)
class Seen:
    at: float  # wall clock, after the registry answered
    image: str
    tag: str
    digest: str


def release_tags_now(registry: RegistryClient, host: str, repository: str) -> dict[str, str]:
    """Every release tag of `repository` and the digest it points at, as the registry says now
    (`host`: the anonymous pull registry, as processes without credentials read it)."""
    reply = requests.get(f"http://{host}/v2/{repository}/tags/list", timeout=5)
    if reply.status_code == 404:
        return {}
    reply.raise_for_status()
    found = {}
    for tag in reply.json().get("tags") or []:
        if is_release_tag(tag) and (digest := registry.tag_digest(host, repository, tag)):
            found[tag] = digest
    return found


class TagSampler(Background):
    """Every `interval_s` (from the start of one sweep to the next), every release tag of one
    image in the registry; keeps each change of what a tag points at."""

    def __init__(self, settings: Settings, image: str, repository: str, interval_s: float = 0.05):
        self.settings = settings
        self.image = image
        self.repository = repository
        self.interval_s = interval_s
        self.changes: list[Seen] = []
        self.sweeps = 0
        self.reads = 0
        self.longest_gap_s = 0.0  # between the starts of two sweeps
        super().__init__(f"tag-sampler-{image}")

    def _loop(self) -> None:
        last: dict[str, str] = {}
        registry = RegistryClient(self.settings)
        host = self.settings.pull_registry or read_registry(self.settings)  # anonymous reads
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                for tag, digest in release_tags_now(registry, host, self.repository).items():
                    self.reads += 1
                    if last.get(tag) != digest:
                        last[tag] = digest
                        self.changes.append(Seen(time.time(), self.image, tag, digest))
                self.sweeps += 1
                now = time.monotonic()
                self._stop.wait(max(0.0, began + self.interval_s - now))
                self.longest_gap_s = max(self.longest_gap_s, time.monotonic() - began)
                began = time.monotonic()
        finally:
            registry.close()


def engine_of(worker: Worker | None) -> str:
    """The name of the engine (a key of ENGINES) a worker builds and tests on; "?" if none."""
    names = {host: name for name, host in ENGINES.items()}
    return names.get(worker.docker_host or "", "?") if worker is not None else "?"


def remove_images(prefix: str) -> None:
    """Remove from both engines the test's names (tags and digest references) of local images;
    an image goes with its last name, children before parents (hence the passes). Never by id:
    generation 0 of the base is the shared base image, which keeps its own names. Then the
    second engine's dangling layers (nobody else builds there)."""
    for name, host in ENGINES.items():
        client = docker.DockerClient(base_url=host)
        try:
            for _ in range(4):
                for image in client.images.list():
                    for ref in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
                        if prefix in ref:
                            with suppress(docker.errors.APIError):
                                client.api.remove_image(ref)
            if name == "e2":
                client.images.prune(filters={"dangling": True})
        finally:
            client.close()


# Tags, and the facts about runs read from the event log.

_MINOR = re.compile(r"(\d+)\.(\d+)")
_RELEASE = re.compile(r"(\d+\.\d+\.\d+)(-[a-z]+[0-9][0-9.]*)?")


def is_release_tag(tag: str) -> bool:
    return tag == "latest" or bool(_MINOR.fullmatch(tag) or _RELEASE.fullmatch(tag))


def tag_fits(tag: str, version: str, os_tag: str) -> bool:
    """Whether a run of `version` built on `os_tag` (e.g. "debian12.12") may hold `tag`."""
    v = Version(version)
    if tag == "latest":
        return not v.is_prerelease
    if m := _MINOR.fullmatch(tag):
        return (v.major, v.minor) == (int(m[1]), int(m[2])) and not v.is_prerelease
    if m := _RELEASE.fullmatch(tag):
        return Version(m[1]) == v and m[2] in (None, f"-{os_tag}")
    return False


def wall(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


@dataclass
class Run:
    """What the log says about one run (`seq`: position of its ReleaseDetected)."""

    image: str
    run_id: str
    version: str
    base_digest: str
    reason: str
    seq: int
    built: list[str] = field(default_factory=list)  # BuildSucceeded digests
    os_tag: str = ""
    passed: dict[str, float] = field(default_factory=dict)  # digest → wall time of TestsPassed
    promoted: list[tuple[str, ...]] = field(default_factory=list)  # tags of each Promoted
    build_attempts: list[str] = field(default_factory=list)
    terminal: list[str] = field(default_factory=list)


def runs_from(records: Iterable[Any]) -> dict[str, Run]:
    """run id → Run, from one image's records."""
    runs: dict[str, Run] = {}
    for r in records:
        e = r.event
        if r.type == "ReleaseDetected":
            runs[e.run_id] = Run(
                r.image, e.run_id, e.tool_version, e.base_digest, e.reason, r.position
            )
            continue
        run = runs.get(getattr(e, "run_id", ""))
        if run is None:
            continue
        if r.type == "BuildStarted":
            run.build_attempts.append(e.attempt)
        elif r.type == "BuildSucceeded":
            run.built.append(e.digest)
            run.os_tag = f"{e.os_id}{e.os_version}"
        elif r.type == "TestsPassed":
            run.passed.setdefault(e.digest, wall(r.at))
        elif r.type == "Promoted":
            run.promoted.append(tuple(e.tags))
        if r.type in TERMINAL:
            run.terminal.append(r.type)
    return runs


def promotions(records: Iterable[Any]) -> list[tuple[int, str, tuple[str, ...]]]:
    """(position, run id, tags moved) of every Promoted event, in log order."""
    return [
        (r.position, r.event.run_id, tuple(r.event.tags)) for r in records if r.type == "Promoted"
    ]


def order_key(run: Run) -> tuple[Version, int]:
    """The order of issue 8 item 1: tool version, then when the run's inputs were detected."""
    from shared.model import tagpolicy

    policy = getattr(tagpolicy, "order_key", None)
    if policy is not None:
        return tuple(policy(run.version, run.seq))  # type: ignore[return-value]
    return (Version(run.version), run.seq)


def describe(run: Run | None, digest: str = "") -> str:
    if run is None:
        return f"an unknown run ({digest[:19]})"
    return f"run {run.run_id} ({run.version}, #{run.seq}, base {run.base_digest[7:19]})"


def sampled_problems(
    changes: Iterable[Seen], runs: Mapping[str, Run], owner: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Invariants (i) and (ii) on what the sampler saw: every release tag only ever pointed at
    its own run's tested candidate, of a version the tag admits, after the tests passed; and a
    tag only ever moved to a later run in the order. `owner`: digest → run id label."""
    untested: list[str] = []
    backward: list[str] = []
    last: dict[tuple[str, str], Run] = {}
    for seen in changes:
        if not is_release_tag(seen.tag):
            continue
        run = runs.get(owner.get(seen.digest, ""))
        where = f"{seen.image}:{seen.tag} → {seen.digest[:19]}"
        if run is None:
            untested.append(f"{where}: built by {describe(None, seen.digest)}")
            continue
        if seen.digest not in run.built:
            untested.append(f"{where}: not the candidate {describe(run)} recorded ({run.built})")
        elif seen.digest not in run.passed:
            untested.append(f"{where}: {describe(run)} never passed its tests on it")
        elif run.passed[seen.digest] > seen.at:
            untested.append(f"{where}: seen before {describe(run)} passed its tests")
        if not tag_fits(seen.tag, run.version, run.os_tag):
            untested.append(f"{where}: the tag does not admit {describe(run)} ({run.os_tag})")
        before = last.get((seen.image, seen.tag))
        if before is not None and order_key(run) < order_key(before):
            backward.append(
                f"{seen.image}:{seen.tag} moved back from {describe(before)} to {describe(run)}"
            )
        last[seen.image, seen.tag] = run
    return untested, backward


def candidate_problems(runs: Mapping[str, Run], owner: Mapping[str, str]) -> list[str]:
    """Every digest a run recorded as built (and then tested) is that run's own image."""
    return [
        f"{describe(run)} recorded {digest[:19]} as its candidate, built by run "
        f"{owner.get(digest, '?')}"
        for run in runs.values()
        for digest in run.built
        if owner.get(digest) != run.run_id
    ]


def logged_order_problems(image: str, records: Iterable[Any], runs: Mapping[str, Run]) -> list[str]:
    """Invariant (ii) on the log: each Promoted moves its tags only to a later run."""
    holder: dict[str, Run] = {}
    problems = []
    for _, run_id, tags in promotions(records):
        run = runs[run_id]
        for tag in tags:
            before = holder.get(tag)
            if before is not None and order_key(run) < order_key(before):
                problems.append(
                    f"{image}:{tag}: Promoted moved it back from {describe(before)} "
                    f"to {describe(run)}"
                )
            holder[tag] = run
    return problems


def expected_tags(runs: Mapping[str, Run], tags: Iterable[str]) -> dict[str, str]:
    """Where each release tag must end: the newest run in the order that passed its tests on
    its own candidate and may hold the tag."""
    passed = [r for r in runs.values() if r.built and r.built[-1] in r.passed]
    expected = {}
    for tag in tags:
        fitting = [r for r in passed if tag_fits(tag, r.version, r.os_tag)]
        if fitting:
            expected[tag] = max(fitting, key=order_key).built[-1]
    return expected


def release_tags_of(runs: Mapping[str, Run]) -> set[str]:
    """Every release tag some run of these may hold."""
    tags = {"latest"}
    for run in runs.values():
        v = Version(run.version)
        tags |= {str(v), f"{v.major}.{v.minor}"} | ({f"{v}-{run.os_tag}"} if run.os_tag else set())
    return tags
