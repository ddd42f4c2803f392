"""Settings and processes of a freshen a test runs on its own: settings from exactly the
FRESHEN_* variables given (none of this process's), and the processes below a worker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings, load_settings
from shared.context import Context, build_context


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings from exactly the FRESHEN_* variables of `env` (none of this process's)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("FRESHEN_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("FRESHEN_"):
                patch.setenv(name, value)
        return load_settings()


def children(pid: int) -> list[int]:
    """The processes `pid` started (a worker's pool children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a worker's pool children and theirs)."""
    return [p for child in children(pid) for p in (child, *descendants(child))]


def flushed_context(redis_url: str, images_dir: Path, **overrides: Any) -> Context:
    """A context on a Redis database of the test's own (flushed), with only these images (and
    any other settings in `overrides`)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("FRESHEN_")]:
            patch.delenv(key)
        settings = Settings(redis_url=redis_url, images_dir=images_dir, **overrides)
    context = build_context(settings)
    context.redis.flushdb()
    return context
