"""Beat's scheduler: Celery's persistent one, its `check-<image>` entries following the images
folder while beat runs.

Every few seconds (at most one check interval) it lists the folder (names only: it parses
nothing, so a broken folder never stops beat). A new folder's check is due at once, a removed
folder's entry goes; a changed definition needs nothing here, as each check reads the current
one. Configured in workers/app.py (`beat_scheduler`), so `celery -A workers.app beat` is the
command still.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import PersistentScheduler

from beat.schedule import CHECK_PREFIX, check_entries
from shared.catalog import image_names
from shared.errors import ConfigError

log = logging.getLogger(__name__)

# Longest time between two listings of the images folder (shorter when the check interval is).
RESCAN_S = 5.0


class FolderScheduler(PersistentScheduler):  # type: ignore[misc]
    """PersistentScheduler whose check entries are those of the images folder's images."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        from workers.app import settings

        self._settings = settings()
        self._rescan_s = min(RESCAN_S, self._settings.check_interval_s)
        self._images: list[str] | None = None
        self._next_scan = 0.0
        self.follow_folder()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = time.monotonic()
        if now >= self._next_scan:
            self.follow_folder()
            self._next_scan = now + self._rescan_s
        delay = float(super().tick(*args, **kwargs))
        return max(0.0, min(delay, self._next_scan - time.monotonic()))

    def follow_folder(self) -> None:
        """Add a check entry per new image folder (due now), drop those of removed ones."""
        try:
            images = image_names(self._settings.images_dir)
        except (OSError, ConfigError) as exc:  # keep checking what was there; say why
            log.error("beat: cannot list the images folder: %s", exc)
            return
        if images == self._images:
            return
        wanted = check_entries(images, self._settings.check_interval_s)
        for key in [k for k in self.schedule if k.startswith(CHECK_PREFIX) and k not in wanted]:
            log.info("beat: %s removed: its image folder is gone", key)
            del self.schedule[key]
        for key, fields in wanted.items():
            if key not in self.schedule:
                entry = self.Entry(**dict(fields, name=key, app=self.app))
                if self._images is not None:  # appeared while beat runs: check it now
                    entry.last_run_at = entry.default_now() - entry.schedule.run_every
                    log.info("beat: %s added: a new image folder", key)
                self.schedule[key] = entry
        self._images = images
