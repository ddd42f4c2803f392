"""Prometheus metrics folded from the event log, served on /metrics.

    python -m shared.metrics     # or `freshen metrics`; FRESHEN_METRICS_ADDRESS / _PORT

A scrape folds each image's stream with the same rules as the live projection
(shared/model/aggregate.py), keeping the folded state in memory and reading only the events
appended since the last scrape. Stage durations come from the times the start and outcome
events were recorded, so every value is rebuilt from the log after a restart: nothing is reset.
The one value not in the log is the time of the last successful check (an idle check appends
nothing); the check stage keeps it in a Redis hash (LAST_CHECK_KEY). The notifier's pending,
failed and delivered notifications come from its own keys (shared/notify/gauges.py).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shared.adapters.eventstore import EventStore
from shared.config import Settings, load_settings
from shared.constants import LAST_CHECK_KEY
from shared.logs import configure_logging
from shared.model import events as ev
from shared.model.aggregate import ImageState, apply
from shared.model.pipeline import Stage, Status
from shared.notify import gauges
from shared.secrets import Masker

log = logging.getLogger(__name__)

# Upper bounds of the stage duration buckets (s): a check-sized promote up to a slow build.
BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
SUCCEEDED, FAILED = "succeeded", "failed"
# The event that starts a stage's attempt, and those that end the stage with its outcome.
STARTS: dict[type, Stage] = {
    ev.BuildStarted: Stage.BUILD,
    ev.TestStarted: Stage.TEST,
    ev.PromotionStarted: Stage.PROMOTE,
}
OUTCOMES: dict[type, tuple[Stage, str]] = {
    ev.BuildSucceeded: (Stage.BUILD, SUCCEEDED),
    ev.BuildFailed: (Stage.BUILD, FAILED),
    ev.TestsPassed: (Stage.TEST, SUCCEEDED),
    ev.TestsFailed: (Stage.TEST, FAILED),
    ev.Promoted: (Stage.PROMOTE, SUCCEEDED),
    ev.PromotionFailed: (Stage.PROMOTE, FAILED),
}


def seconds(at: str) -> float:
    """An event's recorded time (ISO 8601, UTC) as Unix time."""
    return datetime.fromisoformat(at).timestamp()


@dataclass
class Durations:
    """Observed durations of one (stage, outcome): a count per bucket (not cumulative), sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, value_s: float) -> None:
        index = next((i for i, bound in enumerate(BUCKETS_S) if value_s <= bound), len(BUCKETS_S))
        self.counts[index] += 1
        self.sum_s += value_s

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative buckets as the exposition format wants them, +Inf last."""
        bounds = [*(str(b) for b in BUCKETS_S), "+Inf"]
        total, out = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


@dataclass
class ImageFold:
    """One image's state and the counts only the events show, fed each record once, in order."""

    state: ImageState
    started_s: dict[tuple[str, Stage], float] = field(default_factory=dict)  # (run, stage)
    durations: dict[tuple[Stage, str], Durations] = field(default_factory=dict)
    check_failures: int = 0

    def feed(self, record: ev.Recorded) -> None:
        refused = self.state.refused
        apply(self.state, record)
        if self.state.refused == refused:  # refused events changed nothing, count nothing
            self._count(record)

    def _count(self, record: ev.Recorded) -> None:
        event, run_id = record.event, getattr(record.event, "run_id", "")
        if isinstance(event, ev.CheckFailed):
            self.check_failures += 1
        elif isinstance(event, ev.RunRetried):
            self.started_s = {k: v for k, v in self.started_s.items() if k[0] != run_id}
        elif stage := STARTS.get(type(event)):
            # A resumed attempt starts again: the stage lasts from its first start.
            self.started_s.setdefault((run_id, stage), seconds(record.at))
        elif ended := OUTCOMES.get(type(event)):
            start_s = self.started_s.pop((run_id, ended[0]), None)
            if start_s is not None:  # an outcome recorded for a stage that never started
                slot = self.durations.setdefault(ended, Durations())
                slot.observe(max(seconds(record.at) - start_s, 0.0))


class EventLogCollector(Collector):
    """Yields freshen's metric families on each scrape, from the event log."""

    def __init__(self, store: EventStore, client: redis.Redis) -> None:
        self._store = store
        self._redis = client
        self._folds: dict[str, ImageFold] = {}
        self._lock = threading.Lock()  # scrapes may overlap; each image is folded once

    def refresh(self) -> dict[str, ImageFold]:
        """Fold the events appended since the last scrape into each image's state."""
        with self._lock:
            for name in self._store.images():
                fold = self._folds.setdefault(name, ImageFold(ImageState(name)))
                for record in self._store.read(name, fold.state.last_stream_id):
                    fold.feed(record)
            return dict(self._folds)

    def collect(self) -> Iterator[Metric]:
        folds = self.refresh()
        checked: dict[bytes, bytes] = self._redis.hgetall(LAST_CHECK_KEY)  # type: ignore[assignment]
        yield _tags(folds)
        last_check = GaugeMetricFamily(
            "freshen_last_successful_check_timestamp_seconds",
            "Unix time of the image's last check that reached upstream.",
            labels=["image"],
        )
        for image, at in sorted(checked.items()):
            last_check.add_metric([image.decode()], float(at))
        yield last_check
        yield from _checks(folds)
        yield from _runs(folds)
        yield _durations(folds)
        yield _vulnerabilities(folds)
        yield from gauges.families(self._redis)


def _gauge(
    name: str, doc: str, folds: dict[str, ImageFold], value: Callable[[ImageState], float]
) -> GaugeMetricFamily:
    """One sample per image: `value` of its folded state."""
    family = GaugeMetricFamily(name, doc, labels=["image"])
    for image, fold in sorted(folds.items()):
        family.add_metric([image], float(value(fold.state)))
    return family


def _tags(folds: dict[str, ImageFold]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "freshen_tag_info",
        "What each tag points at according to the event log (value 1).",
        labels=["image", "tag", "version", "digest"],
    )
    for image, fold in sorted(folds.items()):
        for tag, pointed in sorted(fold.state.tags.items()):
            family.add_metric([image, tag, pointed.tool_version, pointed.digest], 1.0)
    return family


def _checks(folds: dict[str, ImageFold]) -> Iterator[Metric]:
    failures = CounterMetricFamily(
        "freshen_check_failures",
        "CheckFailed events in the log (one per distinct error while a check keeps failing).",
        labels=["image"],
    )
    for image, fold in sorted(folds.items()):
        failures.add_metric([image], float(fold.check_failures))
    yield failures
    failing = "1 while the image's last check failed."
    yield _gauge("freshen_check_failing", failing, folds, lambda s: bool(s.check_error))


def _runs(folds: dict[str, ImageFold]) -> Iterator[Metric]:
    runs = GaugeMetricFamily(
        "freshen_runs",
        "Runs in the log by their status now (a failed run retried runs again).",
        labels=["image", "status"],
    )
    for image, fold in sorted(folds.items()):
        for status in Status:
            count = sum(r.status == status for r in fold.state.runs.values())
            runs.add_metric([image, status.value], float(count))
    yield runs
    drift = "Tags the last registry audit found drifted."
    yield _gauge("freshen_audit_drift", drift, folds, lambda s: len(s.drift))
    yield _gauge(
        "freshen_promotions_held", "1 while promotions are held.", folds, lambda s: bool(s.held)
    )


def _durations(folds: dict[str, ImageFold]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "freshen_stage_duration_seconds",
        "Time from a stage's first start to its outcome, from the events' recorded times.",
        labels=["image", "stage", "outcome"],
    )
    for image, fold in sorted(folds.items()):
        for (stage, outcome), durations in sorted(fold.durations.items()):
            family.add_metric(
                [image, stage.value, outcome], durations.buckets(), sum_value=durations.sum_s
            )
    return family


def _vulnerabilities(folds: dict[str, ImageFold]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "freshen_vulnerabilities",
        "Known vulnerabilities of distributions installed in a run's candidate, as its test stage "
        "found them (value 1; ignored: the image ignores the id, with a reason).",
        labels=["image", "version", "run", "id", "package", "installed", "ignored"],
    )
    for image, fold in sorted(folds.items()):
        for run in fold.state.runs.values():
            for f in run.vulnerabilities.findings if run.vulnerabilities else ():
                labels = [image, run.tool_version, run.run_id, f.id, f.package, f.installed]
                family.add_metric([*labels, str(bool(f.ignored)).lower()], 1.0)
    return family


def serve(settings: Settings) -> None:
    """Serve /metrics on the configured address until SIGTERM or SIGINT."""
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EventLogCollector(EventStore(client), client))
    server, thread = start_http_server(
        settings.metrics_port, settings.metrics_address, registry=registry
    )
    stop = threading.Event()

    def stopped(_signal: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_address, settings.metrics_port)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    thread.join(timeout=5)


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, Masker.from_settings(settings))
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
