"""The beat schedule, built from the image definitions: one check per image per interval."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from shared.definitions import ImageDefinition

CHECK_TASK = "workers.check.check_image"


def beat_schedule(definitions: Mapping[str, ImageDefinition], interval_s: float) -> dict[str, Any]:
    """`check-<image>` entries for Celery beat; each check expires before the next is due."""
    return {
        f"check-{name}": {
            "task": CHECK_TASK,
            "schedule": timedelta(seconds=interval_s),
            "args": (name,),
            "options": {"expires": interval_s},
        }
        for name in sorted(definitions)
    }
