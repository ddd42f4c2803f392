"""Idle check cost: N watched images, nothing changed upstream; one full check cycle.

    .venv/bin/python -m bench.check_cost [--quick] [--sizes 10,100,1000] [--plot PATH]
        [--concurrency 1] [--batch-size 50]

Each image is a copy of images/awscli whose PyPI project is served by a local PyPI-compatible
endpoint that honours ETags (shared/testing/pypi_server.py; every project gets the same payload
of 200 releases, ~80 kB) and whose base is a copy of the local Debian base in the local
registry, reached through a counting keep-alive proxy. The event log already holds a finished
run for every image's current (version, base digest), so a check finds nothing new. A cycle is
what beat does every interval: one `check_images` task per batch of images on the check queue,
here served by one check worker (concurrency 1 unless asked), timed from the first task sent to
the last result. The first cycle has a cold ETag cache (full PyPI bodies); the idle cycles after
it are the steady state. The `in-process` row checks the same batches in this process, without
Celery. `CPU` is the check worker's process tree (or this process, in-process); `harness CPU`
is this process: the PyPI stand-in and the proxy threads, sending the tasks and following their
results. A second table gives each process's resident memory after the first and last cycle.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from celery.result import ResultSet

from beat.schedule import batches
from bench.common import PULL_REGISTRY, fresh_database, parser, report
from bench.memory import memory_rows, own_memory, tree_memory
from bench.proxy import CountingProxy
from bench.system import (
    apply_environment,
    define,
    freshen_environment,
    process_tree_cpu_s,
    push_base_copy,
    running_workers,
    unique_prefix,
)
from shared.adapters.eventstore import EventStore
from shared.config import Settings, load_settings
from shared.constants import MANIFEST_ACCEPT
from shared.context import build_context
from shared.model import events as ev
from shared.model.runs import run_id
from shared.sends import describe_images
from shared.stages.checkbatch import check_batch
from shared.testing.pypi_server import PyPIServer

RELEASES = [f"1.{minor}.{patch}" for minor in range(20) for patch in range(10)]
NEWEST = RELEASES[-1]
CYCLE_TIMEOUT_S = 600
RESULT_POLL_S = 0.005
# Images whose logs one pipelined write seeds.
SEED_CHUNK = 1000
HEADERS = [
    "N", "cycle", "wall s", "ms/image", "PyPI req/img", "PyPI body B/img", "registry req/img",
    "registry body B/img", "CPU s", "CPU ms/img", "harness CPU ms/img", "runs started",
]  # fmt: skip
MEMORY_HEADERS = ["N", "process", "pid", "RSS MB after cycle 1", "RSS MB after last", "peak MB"]


@dataclass
class Bench:
    """The services one benchmark run shares between sizes."""

    root: Path
    redis_url: str
    client: redis.Redis
    pypi: PyPIServer
    proxy: CountingProxy
    base: str
    base_digest: str
    batch_size: int
    payload: bytes  # the PyPI JSON every project serves (one copy in memory, not N)


def base_digest(base: str) -> str:
    repository, tag = base.removeprefix(PULL_REGISTRY + "/").rsplit(":", 1)
    response = requests.head(
        f"http://{PULL_REGISTRY}/v2/{repository}/manifests/{tag}",
        headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
        timeout=10,
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def seed_events(image: str, base: str, digest: str) -> list[ev.Event]:
    """A finished run of the image's current inputs: the next check finds nothing new."""
    run = run_id(image, NEWEST, digest)
    return [
        ev.ReleaseDetected(run, NEWEST, base, digest, "check"),
        ev.BuildStarted(run, "seed"),
        ev.BuildSucceeded(run, digest, "debian", "12.12"),
        ev.TestStarted(run, "seed"),
        ev.TestsPassed(run, digest, (ev.StepRecord("aws-version", 0, "aws-cli/" + NEWEST),)),
        ev.PromotionStarted(run, "seed"),
        ev.Promoted(run, digest, NEWEST, (NEWEST, "1.19", "latest")),
        ev.RunCompleted(run),
    ]


def prepare(bench: Bench, size: int, prefix: str, proxied: bool) -> tuple[Path, list[str]]:
    """N definitions in their own folder, their PyPI projects and their seeded logs."""
    kind = "counted" if proxied else "direct"
    images = bench.root / f"images-{kind}-{size}"
    images.mkdir()
    base = bench.base.replace(PULL_REGISTRY, bench.proxy.host, 1) if proxied else bench.base
    store = EventStore(bench.client)
    names = [f"{kind[0]}{size}-{i:05d}" for i in range(size)]
    for name in names:
        define(images, name, bench.pypi.index, base, f"{prefix}/{name}")
        bench.pypi.set_response(name, body=bench.payload)
    for chunk in batches(names, SEED_CHUNK):
        store.append_new({name: seed_events(name, base, bench.base_digest) for name in chunk})
    return images, names


def measure(
    bench: Bench, size: int, label: str, cycle: Callable[[], list[dict[str, str]]], pid: int | None
) -> list[object]:
    """Run one cycle and return its table row (CPU of the worker tree, or of this process)."""
    pypi_before, registry_before = bench.pypi.requests, bench.proxy.counts()
    cpu_before = process_tree_cpu_s(pid) if pid else time.process_time()
    harness_before = time.process_time()
    started = time.perf_counter()
    results = cycle()
    wall = time.perf_counter() - started
    cpu = (process_tree_cpu_s(pid) if pid else time.process_time()) - cpu_before
    harness = time.process_time() - harness_before
    pypi = bench.pypi.requests[len(pypi_before) :]
    registry = [
        now - before for now, before in zip(bench.proxy.counts(), registry_before, strict=True)
    ]
    started_runs = sum(len(r) for r in results)
    return [
        size,
        label,
        wall,
        wall * 1000 / size,
        len(pypi) / size,
        sum(r[3] for r in pypi) / size,
        registry[0] / size,
        registry[1] / size,
        cpu,
        cpu * 1000 / size,
        harness * 1000 / size,
        started_runs,
    ]


def queue_cycle(names: list[str], batch_size: int) -> Callable[[], list[dict[str, str]]]:
    """What beat does: one check_images task per batch, each expiring before the next cycle."""
    from beat.schedule import CHECK_BATCH_TASK
    from workers.app import app

    def cycle() -> list[dict[str, str]]:
        sent = [
            app.send_task(CHECK_BATCH_TASK, args=[b], argsrepr=describe_images(b), expires=60)
            for b in batches(names, batch_size)
        ]
        # join_native would add a fixed 0.5 s poll; join follows the results as they come.
        return ResultSet(sent).join(timeout=CYCLE_TIMEOUT_S, interval=RESULT_POLL_S)  # type: ignore[no-any-return]

    return cycle


def in_process(names: list[str], batch_size: int) -> Callable[[], list[dict[str, str]]]:
    """The same batches checked in this process: no Celery, no second process."""
    ctx = build_context(load_settings())
    chunks = batches(names, batch_size)
    return lambda: [check_batch(ctx, chunk, on_started=lambda *_: None) for chunk in chunks]


def central(rows: list[list[object]]) -> list[object]:
    """The row with the median wall time."""
    walls = sorted(float(r[2]) for r in rows)  # type: ignore[arg-type]
    return next(r for r in rows if r[2] == walls[len(walls) // 2])


def bench_size(
    bench: Bench, size: int, idle_cycles: int, prefix: str, concurrency: int
) -> tuple[list[list[object]], list[list[object]]]:
    """First and idle cycles through the counting proxy, idle in-process, idle direct; and the
    memory of the check worker and of this process over the proxied cycles."""
    rows, memory = [], []
    for proxied in (True, False):
        images, names = prepare(bench, size, prefix, proxied)
        registries = f"{PULL_REGISTRY},{bench.proxy.host}"
        settings = freshen_environment(
            bench.redis_url,
            images,
            insecure_registries=registries,
            check_batch_size=str(bench.batch_size),
        )
        apply_environment(settings)
        with running_workers(settings, ["check"], bench.root, concurrency) as workers:
            pid, cycle = workers.processes["check"].pid, queue_cycle(names, bench.batch_size)
            first = measure(bench, size, "first (cold ETag cache)", cycle, pid)
            after_first = (tree_memory(pid), own_memory())
            idle = [measure(bench, size, "idle", cycle, pid) for _ in range(idle_cycles)]
            if proxied:
                memory += memory_rows(size, after_first[0], tree_memory(pid), "check worker")
                memory += memory_rows(
                    size, [after_first[1]], [own_memory()], "bench + PyPI + proxy"
                )
        if not proxied:
            rows.append([*central(idle)[:6], "-", "-", *central(idle)[8:]])
            rows[-1][1] = "idle, registry direct"
            continue
        rows += [first, central(idle)]
        rows.append(
            measure(bench, size, "idle, in-process", in_process(names, bench.batch_size), None)
        )
    return rows, memory


def plot(rows: list[list[object]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[bench]')"
    figure, axes = plt.subplots(figsize=(6, 4))
    lines = (
        ("idle", "o-"),
        ("idle, registry direct", "^-"),
        ("idle, in-process", "s--"),
    )
    for label, style in lines:
        sizes = [float(r[0]) for r in rows if r[1] == label]  # type: ignore[arg-type]
        walls = [float(r[2]) for r in rows if r[1] == label]  # type: ignore[arg-type]
        axes.plot(sizes, walls, style, label=label)
    axes.axhline(10, color="grey", linestyle=":", label="goal for N=1000 (10 s)")
    axes.set(
        xscale="log", yscale="log", xlabel="watched images N", ylabel="check cycle wall time (s)"
    )
    axes.set_title("Idle check cycle, nothing changed upstream")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return f"plot: {path}"


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--sizes", help="comma-separated numbers of watched images")
    args.add_argument("--plot", type=Path, help="PNG of cycle time against N")
    args.add_argument("--concurrency", type=int, default=1, help="check worker pool size")
    default_batch = Settings.model_fields["check_batch_size"].default
    args.add_argument("--batch-size", type=int, default=default_batch, help="images per check task")
    opts = args.parse_args()
    sizes = [int(s) for s in (opts.sizes or ("5" if opts.quick else "10,100,1000")).split(",")]
    standard = not (opts.quick or opts.sizes or opts.concurrency != 1)
    standard = standard and opts.batch_size == default_batch
    plot_path = opts.plot or (Path(__file__).with_name("check_cost.png") if standard else None)
    prefix = unique_prefix()
    client = fresh_database(opts.redis_url)
    rows: list[list[object]] = []
    memory: list[list[object]] = []
    with (
        tempfile.TemporaryDirectory(prefix="freshen-bench-") as tmp,
        PyPIServer() as pypi,
        CountingProxy(PULL_REGISTRY) as proxy,  # check workers read bases anonymously
    ):
        base = push_base_copy(prefix)
        pypi.set_releases("bench", RELEASES)
        payload = pypi.response_for("bench").body  # type: ignore[union-attr]
        bench = Bench(
            Path(tmp), opts.redis_url, client, pypi, proxy, base, base_digest(base),
            opts.batch_size, payload,
        )  # fmt: skip
        for size in sizes:
            found = bench_size(bench, size, 1 if opts.quick else 3, prefix, opts.concurrency)
            rows += found[0]
            memory += found[1]
    client.flushdb()
    title = f"Idle check cost, check worker -c {opts.concurrency}, {opts.batch_size} images a task"
    report(title, HEADERS, rows)
    report("Resident memory (RSS) of each process, proxied cycles", MEMORY_HEADERS, memory)
    if plot_path:
        print(plot(rows, plot_path))


if __name__ == "__main__":
    main()
