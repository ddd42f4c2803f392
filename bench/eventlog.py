"""Event log: append throughput, and replay (fold the whole log into state) at 10k … 1M events.

    .venv/bin/python -m bench.eventlog [--quick] [--sizes 10000,100000,1000000]

Events are a realistic mix: runs of nine events (ReleaseDetected … RunCompleted, eleven test
steps with output tails in TestsPassed), one in ten failing its tests (five events), spread over
100 images. Appends go through EventStore.append (the Lua compare-and-append); the replay log is
loaded with the same encoding by pipelined XADDs, then replayed in a fresh process so its peak
memory (max RSS) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import redis

from bench.common import fresh_database, parser, report
from shared.adapters.eventstore import EventStore, image_stream
from shared.constants import GLOBAL_STREAM, IMAGES_SET
from shared.model import eventcodec
from shared.model import events as ev
from shared.model.projection import replay

IMAGES = 100
DIGEST = "sha256:" + "d" * 64
BASE_DIGEST = "sha256:" + "b" * 64
STEPS = (
    "aws-version",
    "ec2-describe-instances",
    "ec2-find-image",
    "ec2-run-instances",
    "ec2-terminate-instances",
    "s3-ls",
    "s3-mb",
    "s3-cp-up",
    "s3-cp-down",
    "s3-content-matches",
    "s3-rb",
)
# Every tenth run fails its tests.
FAILING_EVERY = 10
LOAD_BATCH = 5_000


def _steps(run: int) -> tuple[ev.StepRecord, ...]:
    tail = f"upload: ./upload.txt to s3://freshen-test-{run:x}/upload.txt\n" * 3
    return tuple(ev.StepRecord(name, 0, tail) for name in STEPS)


def run_events(run: int) -> list[ev.Event]:
    """The events of one run: nine for a promoted run, five for one whose tests failed."""
    run_id, version = f"{run:016x}", f"1.{run // 100 % 100}.{run % 100}"
    head: list[ev.Event] = [
        ev.ReleaseDetected(run_id, version, "python:3-alpine", BASE_DIGEST, "check"),
        ev.BuildStarted(run_id, f"build-{run}"),
        ev.BuildSucceeded(run_id, DIGEST, "debian", "12.12"),
        ev.TestStarted(run_id, f"test-{run}"),
    ]
    if run % FAILING_EVERY == FAILING_EVERY - 1:
        return [*head, ev.TestsFailed(run_id, DIGEST, "s3-mb", "make_bucket failed", _steps(run))]
    tags = (version, version.rsplit(".", 1)[0], "latest", f"{version}-debian12.12")
    return [
        *head,
        ev.TestsPassed(run_id, DIGEST, _steps(run)),
        ev.PromotionStarted(run_id, f"promote-{run}"),
        ev.Promoted(run_id, DIGEST, version, tags),
        ev.VersionsCommitted(run_id, "c" * 40, f"img-{version}"),
        ev.RunCompleted(run_id),
    ]


def runs(first: int) -> Iterator[tuple[str, list[ev.Event]]]:
    """(image, events of one run) from run number `first` on, images in turn."""
    run = first
    while True:
        yield f"bench-{run % IMAGES:03d}", run_events(run)
        run += 1


class Loader:
    """Writes encoded events with pipelined XADDs to both streams, as the Lua append would."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._positions: dict[str, int] = {}
        self._runs = runs(0)
        self.total = 0

    def load_to(self, total: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pending = 0
        while self.total < total:
            image, new = next(self._runs)
            position = self._positions.get(image, 0)
            at = ev.now()
            for event in new:
                doc = eventcodec.encode(image, position, at, event)
                pipe.xadd(image_stream(image), {"e": doc})
                pipe.xadd(GLOBAL_STREAM, {"e": doc})
                position += 1
            pipe.sadd(IMAGES_SET, image)
            self._positions[image] = position
            self.total += len(new)
            pending += len(new)
            if pending >= LOAD_BATCH:
                pipe.execute()
                pending = 0
        pipe.execute()


def append_throughput(client: redis.Redis, events: int, batched: bool) -> list[object]:
    """EventStore.append one event per call, or one run (a batch) per call."""
    store = EventStore(client)
    positions: dict[str, int] = {}
    calls = written = 0
    started = time.perf_counter()
    for image, new in runs(10_000_000):
        image = ("batch-" if batched else "single-") + image
        for chunk in [new] if batched else [[e] for e in new]:
            positions[image] = store.append(image, chunk, positions.get(image, 0))
            calls += 1
            written += len(chunk)
        if written >= events:
            break
    elapsed = time.perf_counter() - started
    mode = "append, one run (~9 events) per call" if batched else "append, one event per call"
    return [mode, written, elapsed, written / elapsed, calls / elapsed, "", ""]


def child(url: str, mode: str) -> None:
    """In a fresh process: replay (or only read and decode) the whole log; print JSON."""
    store = EventStore(redis.Redis.from_url(url))
    started = time.perf_counter()
    if mode == "replay":
        states = replay(store)
        count = sum(s.position for s in states.values())
    else:
        count = sum(1 for _ in store.read_all())
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"events": count, "seconds": elapsed, "peak_mib": peak_mib}))


def replay_row(url: str, mode: str) -> list[object]:
    command = [sys.executable, "-m", "bench.eventlog", "--redis-url", url, "--child", mode]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    what = "replay (read + decode + fold)" if mode == "replay" else "read + decode only"
    events, seconds = int(result["events"]), float(result["seconds"])
    return [what, events, seconds, events / seconds, "", result["peak_mib"], ""]


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--sizes", help="comma-separated log sizes to replay")
    args.add_argument("--child", choices=("replay", "read"), help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.child:
        child(opts.redis_url, opts.child)
        return
    default = "2000,10000" if opts.quick else "10000,100000,1000000"
    sizes = sorted(int(s) for s in (opts.sizes or default).split(","))
    client = fresh_database(opts.redis_url)
    appends = 2_000 if opts.quick else 20_000
    rows = [append_throughput(client, appends, False), append_throughput(client, appends, True)]
    client.flushdb()
    loader = Loader(client)
    for size in sizes:
        loader.load_to(size)
        memory = int(client.info("memory")["used_memory"]) / 2**20
        for mode in ("read", "replay"):
            row = replay_row(opts.redis_url, mode)
            rows.append([*row[:6], f"{memory:,.0f}" if mode == "replay" else ""])
    client.flushdb()
    headers = ["operation", "events", "seconds", "events/s", "calls/s", "peak RSS MiB", "Redis MiB"]
    report("Event log: append and replay", headers, rows)


if __name__ == "__main__":
    main()
