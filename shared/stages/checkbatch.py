"""A batch of checks in one task: what beat sends every interval.

Each image is checked on its own (shared/stages/check.py), with the events a check of that one
image records; an image whose check fails unexpectedly is recorded as CheckFailed under its
name and the batch goes on. What the images share: their states, read in two round trips, and
one write of the times their upstreams answered.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import redis

from shared.context import Context
from shared.errors import InvalidInput
from shared.model import validate
from shared.model.projection import ImageState
from shared.stages.check import check_one, record_check_failed, stamp_checked

log = logging.getLogger(__name__)

# Redis unreachable: no check of the batch could record anything, so the batch ends.
OUTAGE = (redis.ConnectionError, redis.TimeoutError)
# States read longer ago than this are read again before the next image's check: a batch held
# up by slow upstreams decides on states at most this old (as a check of one image would
# decide on a state read a moment before; appends are checked against the log's position).
FRESH_S = 1.0


def check_batch(
    ctx: Context,
    images: Sequence[str],
    on_started: Callable[[str, str], object],
    fatal: tuple[type[BaseException], ...] = (),
) -> dict[str, str]:
    """Check each image in turn; image → id of the run its check started, handed on at once
    with `on_started(image, run_id)`.

    `fatal` exceptions end the batch (the task's time limit): the images not reached are
    logged and wait for the next check. A Redis outage ends it too: no check could record.
    """
    started: dict[str, str] = {}
    answered: list[str] = []
    states: dict[str, ImageState] = {}
    loaded_at = -math.inf
    for n, image in enumerate(images):
        if time.monotonic() - loaded_at > FRESH_S:
            states, loaded_at = _load(ctx, images[n:]), time.monotonic()
        try:
            outcome = check_one(ctx, image, states.get(image))
        except fatal:
            left = ", ".join(images[n:])
            log.error("check batch stopped at %s by its time limit; not checked: %s", image, left)
            raise
        except OUTAGE:
            raise
        except Exception as exc:  # one image's failure must not stop the others
            _record_unexpected(ctx, image, exc)
            continue
        if outcome.answered:
            answered.append(image)
        if outcome.run_id:
            started[image] = outcome.run_id
            on_started(image, outcome.run_id)
    stamp_checked(ctx, answered)
    return started


def _load(ctx: Context, images: Sequence[str]) -> dict[str, ImageState]:
    """The states of those images whose names are valid; none when one cannot be read (each
    check then reads its own, and only the unreadable one fails)."""
    valid = [image for image in images if _is_image_name(image)]
    try:
        return ctx.projections.load_many(valid)
    except OUTAGE:
        raise
    except Exception:
        log.exception("check batch: reading %d states at once failed; each alone", len(valid))
        return {}


def _record_unexpected(ctx: Context, image: str, exc: Exception) -> None:
    """Log an image's unexpected check failure; record it as CheckFailed when the name is one."""
    log.exception("%s: check failed unexpectedly", image)
    if not _is_image_name(image):
        return
    try:
        record_check_failed(ctx, image, f"{type(exc).__name__}: {exc}")
    except Exception:  # the check and its record fail alike (an unreadable state): logged above
        log.exception("%s: could not record the failed check", image)


def _is_image_name(image: str) -> bool:
    try:
        validate.image_name(image)
    except InvalidInput:
        return False
    return True
