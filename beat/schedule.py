"""The beat schedule, built from the image definitions: one check per image per interval, plus
the reconcile and audit tasks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from shared.definitions import ImageDefinition

CHECK_TASK = "workers.check.check_image"
RECONCILE_TASK = "workers.check.reconcile"
AUDIT_TASK = "workers.check.audit"


def _every(task: str, interval_s: float, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """An entry whose task expires before the next one of its kind is due."""
    return {
        "task": task,
        "schedule": timedelta(seconds=interval_s),
        "args": args,
        "options": {"expires": interval_s},
    }


def beat_schedule(
    definitions: Mapping[str, ImageDefinition],
    interval_s: float,
    reconcile_interval_s: float,
    audit_interval_s: float = 300.0,
) -> dict[str, Any]:
    """`check-<image>` entries, one `reconcile` and one `audit` entry for Celery beat."""
    schedule: dict[str, Any] = {
        f"check-{name}": _every(CHECK_TASK, interval_s, (name,)) for name in sorted(definitions)
    }
    schedule["reconcile"] = _every(RECONCILE_TASK, reconcile_interval_s)
    schedule["audit"] = _every(AUDIT_TASK, audit_interval_s)
    return schedule
