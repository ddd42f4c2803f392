"""Logging set-up for workers, beat and the CLI, with a filter that masks secret values."""

from __future__ import annotations

import logging

from shared.secrets import Masker, neutralize

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class MaskingFilter(logging.Filter):
    """Masks every configured secret (and its encodings) in a record's message and exception
    text, and shows control characters as escapes; installed on every handler."""

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self._masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = neutralize(self._masker(message)), None
        if record.exc_text:
            record.exc_text = self._masker(record.exc_text)
        return True


def configure_logging(level: str, masker: Masker | None = None) -> None:
    """One line per record on stderr, secrets masked."""
    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
    if masker is not None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(MaskingFilter(masker))
