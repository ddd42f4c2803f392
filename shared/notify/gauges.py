"""The notifier's Prometheus families, from its Redis keys (shared/metrics.py serves them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared.constants import GLOBAL_STREAM, NOTIFY_GROUP
from shared.notify.outbox import OUTBOX, STATS, TARGETS

COUNTS = {
    "delivered": "Notifications the target's service accepted.",
    "failed": "Deliveries the target's service did not accept (each is retried; the stream "
    "freshen:notify:failures says why).",
    "resent": "Notifications sent again after a notifier died while sending (possible duplicates).",
}


def families(client: redis.Redis) -> Iterator[Metric]:
    labels = {k.decode(): v.decode() for k, v in _hash(client, TARGETS).items()}
    stats = {k.decode(): float(v) for k, v in _hash(client, STATS).items()}
    pending = GaugeMetricFamily(
        "freshen_notifications_pending",
        "Notifications queued for the target and not yet accepted by its service.",
        labels=["target"],
    )
    for target, label in sorted(labels.items(), key=lambda item: item[1]):
        pending.add_metric([label], float(client.zcard(OUTBOX + target)))
    yield pending
    for name, doc in COUNTS.items():
        counter = CounterMetricFamily(f"freshen_notifications_{name}", doc, labels=["target"])
        for target, label in sorted(labels.items(), key=lambda item: item[1]):
            counter.add_metric([label], stats.get(f"{name}:{target}", 0.0))
        yield counter
    unread = GaugeMetricFamily(
        "freshen_notifications_unread_events",
        "Events in the log the notifier has not handed on yet (not read, or read by a notifier "
        "that stopped before handing them on).",
    )
    unread.add_metric([], _unread(client))
    yield unread


def _hash(client: redis.Redis, key: str) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return found


def _unread(client: redis.Redis) -> float:
    try:
        groups: list[dict[str, Any]] = client.xinfo_groups(GLOBAL_STREAM)
    except redis.ResponseError:  # no stream yet
        return 0.0
    for group in groups:
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        if name == NOTIFY_GROUP:
            return float((group.get("lag") or 0) + group.get("pending", 0))
    return 0.0
