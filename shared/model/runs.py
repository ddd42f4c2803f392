"""Run ids, derived from a run's inputs so a repeated request finds the run it already started."""

from __future__ import annotations

import hashlib

RUN_ID_LENGTH = 16


def run_id(image: str, tool_version: str, base_digest: str, generation: int = 0) -> str:
    """Same image, tool version and base digest give the same id; `generation` > 0 forces anew."""
    key = f"{image}\0{tool_version}\0{base_digest}\0{generation}"
    return hashlib.sha256(key.encode()).hexdigest()[:RUN_ID_LENGTH]
