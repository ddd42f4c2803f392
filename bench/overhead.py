"""Orchestration overhead: one build → test → promote of the same release on the same base, as a
plain script (bench/baseline.py: Docker SDK + registry HTTP) and through freshen's queues and
real workers (`rebuild(image, version, force=True)` until RunCompleted), alternating.

    .venv/bin/python -m bench.overhead [--quick] [--rounds 5] [--images awscli,tiny]
                                       [--vulnerabilities off]

`awscli` is the real definition (pip-installed AWS CLI, its eleven-command test against moto);
`tiny` is a LABEL on the base and a one-command test, so the fixed cost of orchestration shows.
One untimed warm-up run of each side fills the build cache; every timed build is a cache hit.
Rounds alternate which side goes first. No git commit on either side (FRESHEN_GIT_URL unset).
freshen's test stage also runs the vulnerability gate (the plain script has none; it reads
PyPI's JSON API); `--vulnerabilities off` sets the images' policy to `off`, to price it.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench.baseline import PlainScript
from bench.common import (
    REGISTRY,
    fresh_database,
    median,
    parser,
    registry_credentials,
    report,
)
from bench.system import (
    apply_environment,
    define,
    freshen_environment,
    push_base_copy,
    running_workers,
    unique_prefix,
)
from shared.context import Context

VERSIONS = {"awscli": "1.46.3", "tiny": "1.0.0"}
# Never asked: every run names its version.
UNUSED_INDEX = "http://127.0.0.1:9/pypi"
RUN_TIMEOUT_S = 900
# The plain script's test container environment: the same test credentials freshen gives (the
# endpoint is the test's own moto).
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
HEADERS = [
    "image",
    "rounds",
    "plain script median s",
    "freshen median s",
    "ratio",
    "overhead median s",
    "per-round ratios",
]


def set_policy(folder: Path, policy: str) -> None:
    """The image's `[vulnerabilities] policy`, as image.toml spells it."""
    toml = (folder / "image.toml").read_text()
    toml, found = re.subn(r'(?m)^policy = "\w+"', f'policy = "{policy}"', toml)
    if found != 1:
        raise RuntimeError(f"{folder}/image.toml: no single `policy = ...` line to set")
    (folder / "image.toml").write_text(toml)


def freshen_round(ctx: Context, image: str, version: str) -> float:
    """Seconds from rebuild() to the RunCompleted event of the forced run."""
    from shared.api import rebuild

    started = time.time()
    run_id = rebuild(image, version=version, force=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = ctx.state(image).runs[run_id]
        if run.status == "failed":
            raise RuntimeError(f"{image}: run {run_id} failed: {run.error}")
        if run.status == "done":
            return datetime.fromisoformat(run.updated_at).timestamp() - started
        time.sleep(0.05)
    raise RuntimeError(f"{image}: run {run_id} not done after {RUN_TIMEOUT_S} s")


def plain_round(
    script: PlainScript, folder: Path, base: str, repository: str, version: str
) -> float:
    labels = {
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.base.name": base,
        "io.freshen.run-id": uuid.uuid4().hex[:16],
    }
    started = time.perf_counter()
    script.run(folder, base, repository, version, labels)
    return time.perf_counter() - started


def compare(plain: Callable[[], float], freshen: Callable[[], float], rounds: int) -> list[object]:
    """Warm up both, then alternate which goes first; medians, ratio, paired differences."""
    plain(), freshen()
    times: dict[str, list[float]] = {"plain": [], "freshen": []}
    for round_ in range(rounds):
        order = [("plain", plain), ("freshen", freshen)]
        for side, run in order if round_ % 2 == 0 else order[::-1]:
            times[side].append(run())
    ratios = [f / p for p, f in zip(times["plain"], times["freshen"], strict=True)]
    differences = [f - p for p, f in zip(times["plain"], times["freshen"], strict=True)]
    plain_s, freshen_s = median(times["plain"]), median(times["freshen"])
    spread = f"{min(ratios):.3f} to {max(ratios):.3f}"
    return [rounds, plain_s, freshen_s, freshen_s / plain_s, median(differences), spread]


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--rounds", type=int, help="timed rounds per side")
    args.add_argument("--images", help="comma-separated: awscli, tiny")
    args.add_argument(
        "--vulnerabilities",
        choices=["block", "warn", "off"],
        help="the images' vulnerability policy (default: the definition's, block)",
    )
    opts = args.parse_args()
    rounds = opts.rounds or (1 if opts.quick else 5)
    kinds = (opts.images or ("tiny" if opts.quick else "awscli,tiny")).split(",")
    prefix = unique_prefix()
    fresh_database(opts.redis_url)
    table = []
    with tempfile.TemporaryDirectory(prefix="freshen-bench-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        base = push_base_copy(prefix)
        for kind in kinds:
            folder = define(images, kind, UNUSED_INDEX, base, f"{prefix}/{kind}", kind == "tiny")
            if opts.vulnerabilities:
                set_policy(folder, opts.vulnerabilities)
        settings = freshen_environment(opts.redis_url, images)
        apply_environment(settings)
        from workers.app import context

        script = PlainScript(REGISTRY, TEST_ENV, registry_credentials())
        with running_workers(settings, ["build", "test", "promote"], Path(tmp)):
            for kind in kinds:
                # The same folder (build context) for both sides: the same build cache.
                version, folder = VERSIONS[kind], images / kind
                repository = f"{prefix}/{kind}-plain"
                row = compare(
                    lambda: plain_round(script, folder, base, repository, version),  # noqa: B023
                    lambda: freshen_round(context(), kind, version),  # noqa: B023
                    rounds,
                )
                table.append([kind, *row])
        script.close()
    fresh_database(opts.redis_url)
    report("Orchestration overhead: plain script vs freshen (warm cache)", HEADERS, table)


if __name__ == "__main__":
    main()
