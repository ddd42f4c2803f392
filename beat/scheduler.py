"""Beat's scheduler: Celery's persistent one, its `check-<n>` batch entries following the images
folder while beat runs.

Every few seconds (at most one check interval) it lists the folder (names only: it parses
nothing, so a broken folder never stops beat) and batches the images again. A new folder's
batch is due at once; a removed folder leaves its batch; a changed definition needs nothing
here, as each check reads the current one. An image that moves to another batch (names before
it came or went) is checked at that batch's time, within two intervals. Configured in
workers/app.py (`beat_scheduler`), so `celery -A workers.app beat` is the command still.
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
        """Batch the folder's images again: a batch holding a new image folder is due now, a
        batch that only changed keeps its rhythm, the entries of batches no longer needed go."""
        try:
            images = image_names(self._settings.images_dir)
        except (OSError, ConfigError) as exc:  # keep checking what was there; say why
            log.error("beat: cannot list the images folder: %s", exc)
            return
        if images == self._images:
            return
        s = self._settings
        wanted = check_entries(images, s.check_interval_s, s.check_batch_size)
        for key in [k for k in self.schedule if k.startswith(CHECK_PREFIX) and k not in wanted]:
            log.info("beat: %s removed: fewer image folders", key)
            del self.schedule[key]
        known = set(images if self._images is None else self._images)
        for key, fields in wanted.items():
            old = self.schedule.get(key)
            if old is not None and tuple(old.args) == fields["args"]:
                continue
            entry = self.Entry(**dict(fields, name=key, app=self.app))
            if old is not None:
                entry.last_run_at = old.last_run_at
            if added := [name for name in fields["args"][0] if name not in known]:
                entry.last_run_at = entry.default_now() - entry.schedule.run_every
                log.info("beat: %s due now: new image folder(s) %s", key, ", ".join(added))
            self.schedule[key] = entry
        self._images = images
        log.info("beat: %d image folders in %d check batches", len(images), len(wanted))
