"""A context of a freshen a test runs on its own: on a flushed Redis database of the test's,
with exactly the settings given (none of this process's FRESHEN_* variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.context import Context, build_context


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
