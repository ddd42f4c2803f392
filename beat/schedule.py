"""The beat schedule, built from the images folder: the images' checks in batches, one entry per
batch per interval, plus the reconcile and audit tasks. beat/scheduler.py keeps the check
entries following the folder."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from shared.sends import describe_images

CHECK_PREFIX = "check-"  # beat entry names of the batched checks: check-<batch number>
CHECK_TASK = "workers.check.check_image"  # one image, on demand (tests, benchmarks, a shell)
CHECK_BATCH_TASK = "workers.check.check_images"  # a batch of images: what beat sends
RECONCILE_TASK = "workers.check.reconcile"
AUDIT_TASK = "workers.check.audit"


def _every(
    task: str, interval_s: float, args: tuple[Any, ...] = (), shown: str = ""
) -> dict[str, Any]:
    """An entry whose task expires before the next one of its kind is due."""
    return {
        "task": task,
        "schedule": timedelta(seconds=interval_s),
        "args": args,
        "options": {"expires": interval_s, **({"argsrepr": shown} if shown else {})},
    }


def batches(images: Iterable[str], size: int) -> list[list[str]]:
    """The images in name order, cut into batches of `size` (the last one may be smaller)."""
    ordered = sorted(images)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def check_entries(
    images: Iterable[str], interval_s: float, batch_size: int
) -> dict[str, dict[str, Any]]:
    """A `check-<n>` entry per batch of images (a broken folder is checked too: its check
    records what is broken)."""
    return {
        f"{CHECK_PREFIX}{n}": _every(CHECK_BATCH_TASK, interval_s, (batch,), describe_images(batch))
        for n, batch in enumerate(batches(images, batch_size), start=1)
    }


def beat_schedule(
    images: Iterable[str],
    interval_s: float,
    reconcile_interval_s: float,
    audit_interval_s: float = 300.0,
    *,
    batch_size: int,
) -> dict[str, Any]:
    """`check-<n>` entries, one `reconcile` and one `audit` entry for Celery beat."""
    schedule: dict[str, Any] = check_entries(images, interval_s, batch_size)
    schedule["reconcile"] = _every(RECONCILE_TASK, reconcile_interval_s)
    schedule["audit"] = _every(AUDIT_TASK, audit_interval_s)
    return schedule
