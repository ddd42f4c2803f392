"""The one Celery app, its configuration and the only routing table.

Configuration is read from the settings when Celery first needs it (worker, beat or a shell
sending a task), not at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from beat.schedule import beat_schedule
from shared.catalog import image_names
from shared.config import Settings, load_settings, soft_time_limit_s
from shared.constants import Queue
from shared.context import Context, build_context
from shared.errors import ConfigError
from shared.logs import configure_logging
from shared.model.pipeline import PIPELINE, longest_time_limit_s
from shared.secrets import Masker

# Task-name patterns → queue, from the pipeline's declaration. Each stage runs on its own queue
# with its own workers; the check module's other tasks (reconcile, audit) share the check queue.
ROUTES = {f"{spec.module}.*": {"queue": spec.queue.value} for spec in PIPELINE}
TASK_MODULES = [spec.module for spec in PIPELINE]


@cache
def settings() -> Settings:
    """The settings, read once per process; a bad setting stops the process with its message."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise SystemExit(f"freshen: {exc}") from None


@cache
def context() -> Context:
    """This process's clients, built on first use (after the worker forked its pool)."""
    return build_context(settings())


class TimeLimits:
    """A Celery task annotation: each task's hard and soft time limit from the settings.

    The soft limit comes first, leaving the task time to record its failure.
    """

    def __init__(self, s: Settings) -> None:
        self._by_module = {f"{spec.module}.": spec.time_limit_s(s) for spec in PIPELINE}

    def annotate(self, task: Any) -> dict[str, int] | None:
        for module, hard in self._by_module.items():
            if task.name.startswith(module):
                return {"time_limit": hard, "soft_time_limit": soft_time_limit_s(hard)}
        return None


def celery_config(s: Settings) -> dict[str, Any]:
    longest = longest_time_limit_s(s)
    return {
        "broker_url": s.redis_url,
        "result_backend": s.redis_url,
        "result_expires": 7 * 24 * 3600,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Unacked messages come back after this; it must outlast the longest task.
        "broker_transport_options": {"visibility_timeout": longest * 2},
        "result_backend_transport_options": {"visibility_timeout": longest * 2},
        "broker_connection_retry_on_startup": True,
        "task_routes": ROUTES,
        "task_default_queue": Queue.CHECK.value,
        "task_annotations": (TimeLimits(s),),
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        # Beat's check entries follow the images folder while it runs (beat/scheduler.py).
        "beat_scheduler": "beat.scheduler:FolderScheduler",
        "beat_schedule": beat_schedule(
            image_names(s.images_dir),
            s.check_interval_s,
            s.reconcile_interval_s,
            s.audit_interval_s,
            batch_size=s.check_batch_size,
        ),
        "timezone": "UTC",
    }


class _LazyConfig(Mapping[str, Any]):
    """Celery reads this mapping when it first needs configuration; settings load then."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def _values(self) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = celery_config(settings())
        return self._loaded

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


app = Celery("freshen", include=TASK_MODULES)
app.config_from_object(_LazyConfig())


@setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(settings().log_level, Masker.from_settings(settings()))


logging.getLogger(__name__).addHandler(logging.NullHandler())
