"""State folded from events: what each tag points at and where each run is.

`fold` (shared/model/aggregate.py) is pure. The live projection is a snapshot in Redis plus
the events after it; `replay` folds every stream from scratch, and must give the same state.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import redis
from pydantic import TypeAdapter

from shared.adapters.eventstore import EventStore
from shared.constants import SNAPSHOT_PREFIX
from shared.model.aggregate import (
    ImageState,
    InvalidTransition,
    RunState,
    TagState,
    Waiting,
    apply,
    check_allowed,
    fold,
    order_key,
)

__all__ = [
    "FOLD_VERSION",
    "ImageState",
    "InvalidTransition",
    "Projections",
    "RunState",
    "TagState",
    "Waiting",
    "apply",
    "check_allowed",
    "comparable",
    "fold",
    "order_key",
    "replay",
]

# The version of the fold (shared/model/aggregate.py). A snapshot saved by another version is
# ignored and rebuilt from the log: a changed fold must not mix with state folded the old way.
FOLD_VERSION = 4

_STATE = TypeAdapter(ImageState)


def to_json(state: ImageState) -> str:
    return json.dumps(asdict(state), separators=(",", ":"))


def from_json(raw: str | bytes) -> ImageState:
    return _STATE.validate_python(json.loads(raw))


# Replace the snapshot only with a newer one (concurrent readers may race to save), or with
# one of the current fold version.
_SAVE_IF_NEWER = """
local current = tonumber(redis.call('HGET', KEYS[1], 'position') or '-1')
local fold = redis.call('HGET', KEYS[1], 'fold')
if current < tonumber(ARGV[1]) or fold ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'position', ARGV[1], 'state', ARGV[2], 'fold', ARGV[3])
end
"""


class Projections:
    """The live projection: a snapshot per image in Redis, brought up to date on read."""

    def __init__(self, client: redis.Redis, store: EventStore) -> None:
        self._redis = client
        self._store = store
        self._save_if_newer = client.register_script(_SAVE_IF_NEWER)

    def load(self, image: str) -> ImageState:
        """The image's current state: snapshot plus any events appended since."""
        return self.load_many([image])[image]

    def load_many(self, images: Sequence[str]) -> dict[str, ImageState]:
        """Several images' current states in two round trips (snapshots, then the events
        appended since each); a snapshot is saved again only when events were folded into it."""
        with self._redis.pipeline(transaction=False) as pipe:
            for image in images:
                pipe.hmget(SNAPSHOT_PREFIX + image, ["state", "fold"])
            snapshots: list[list[bytes | None]] = pipe.execute()
        states: dict[str, ImageState] = {}
        stale: set[str] = set()
        for image, (raw, fold_version) in zip(images, snapshots, strict=True):
            if raw is not None and fold_version == str(FOLD_VERSION).encode():
                states[image] = from_json(raw)
            else:
                states[image] = ImageState(image)
                stale.add(image)
        after = {image: state.last_stream_id for image, state in states.items()}
        for image, records in self._store.read_many(after).items():
            if records or image in stale:
                state = fold(image, records, states[image])
                self._save_if_newer(
                    keys=[SNAPSHOT_PREFIX + image],
                    args=[state.position, to_json(state), FOLD_VERSION],
                )
        return states

    def all(self) -> dict[str, ImageState]:
        return {name: self.load(name) for name in self._store.images()}


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting still frees everything).

    A replay allocates millions of long-lived objects and no reference cycles, so each automatic
    collection only rescans the growing state: with it on, replaying 1M events took 1.7x as long
    (bench/eventlog.py). Process-wide while it lasts; any cycle made meanwhile is collected after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(store: EventStore) -> dict[str, ImageState]:
    """Fold every image's stream from scratch, ignoring snapshots."""
    states: dict[str, ImageState] = {}
    with _cyclic_gc_paused():
        for record in store.read_all():
            state = states.setdefault(record.image, ImageState(record.image))
            apply(state, record)
    return states


def comparable(state: ImageState) -> dict[str, Any]:
    """State without stream ids (the global stream's ids differ from the image stream's)."""
    doc = asdict(state)
    doc.pop("last_stream_id")
    return doc
