"""The beat schedule, built from the image definitions: one check per image per interval."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from shared.definitions import ImageDefinition

CHECK_TASK = "workers.check.check_image"
RECONCILE_TASK = "workers.check.reconcile"


def beat_schedule(
    definitions: Mapping[str, ImageDefinition], interval_s: float, reconcile_interval_s: float
) -> dict[str, Any]:
    """`check-<image>` entries and one `reconcile` entry for Celery beat; each task expires
    before the next one of its kind is due."""
    schedule: dict[str, Any] = {
        f"check-{name}": {
            "task": CHECK_TASK,
            "schedule": timedelta(seconds=interval_s),
            "args": (name,),
            "options": {"expires": interval_s},
        }
        for name in sorted(definitions)
    }
    schedule["reconcile"] = {
        "task": RECONCILE_TASK,
        "schedule": timedelta(seconds=reconcile_interval_s),
        "args": (),
        "options": {"expires": reconcile_interval_s},
    }
    return schedule
