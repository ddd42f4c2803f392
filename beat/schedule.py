"""The beat schedule, built from the images folder: one check per image folder per interval, plus
the reconcile and audit tasks. beat/scheduler.py keeps the check entries following the folder."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from shared.sends import describe

CHECK_PREFIX = "check-"  # beat entry names of the per-image checks: check-<image>
CHECK_TASK = "workers.check.check_image"
RECONCILE_TASK = "workers.check.reconcile"
AUDIT_TASK = "workers.check.audit"


def _every(task: str, interval_s: float, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """An entry whose task expires before the next one of its kind is due."""
    return {
        "task": task,
        "schedule": timedelta(seconds=interval_s),
        "args": args,
        "options": {"expires": interval_s, **({"argsrepr": describe(*args)} if args else {})},
    }


def check_entries(images: Iterable[str], interval_s: float) -> dict[str, dict[str, Any]]:
    """A `check-<image>` entry per image name (a broken folder is checked too: its check
    records what is broken)."""
    return {f"{CHECK_PREFIX}{name}": _every(CHECK_TASK, interval_s, (name,)) for name in images}


def beat_schedule(
    images: Iterable[str],
    interval_s: float,
    reconcile_interval_s: float,
    audit_interval_s: float = 300.0,
) -> dict[str, Any]:
    """`check-<image>` entries, one `reconcile` and one `audit` entry for Celery beat."""
    schedule: dict[str, Any] = check_entries(sorted(images), interval_s)
    schedule["reconcile"] = _every(RECONCILE_TASK, reconcile_interval_s)
    schedule["audit"] = _every(AUDIT_TASK, audit_interval_s)
    return schedule
