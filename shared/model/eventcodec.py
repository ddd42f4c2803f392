"""Events as stored: JSON with a type name and the type's version, never pickle.

Each event type has a version (`VERSION` on its class, 1 when absent), stored as the envelope's
`schema`. An older stored version is upcast when read (`UPCASTERS`), so a log written by an
earlier freshen replays into today's events; a newer one than this freshen knows is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from shared.model.events import Event, Recorded
from shared.model.pipeline import Cause

# The version of an event type that has never changed; a type that changes sets VERSION higher
# and adds an upcaster from each older version.
SCHEMA_VERSION = 1

EVENT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in Event.__args__}
_ADAPTERS: dict[str, TypeAdapter[Any]] = {n: TypeAdapter(c) for n, c in EVENT_TYPES.items()}


def version_of(cls: type[Any]) -> int:
    return int(getattr(cls, "VERSION", SCHEMA_VERSION))


_CURRENT: dict[str, int] = {n: version_of(c) for n, c in EVENT_TYPES.items()}


def _add_definite_cause(data: dict[str, Any]) -> dict[str, Any]:
    """Failures written before `cause` existed were all treated as final."""
    return {**data, "cause": Cause.DEFINITE.value}


# (event type, stored version) → the same event's data at the next version.
UPCASTERS: dict[tuple[str, int], Any] = {
    ("BuildFailed", 1): _add_definite_cause,
    ("TestsFailed", 1): _add_definite_cause,
    ("PromotionFailed", 1): _add_definite_cause,
}


def encode(image: str, position: int, at: str, event: Event) -> str:
    """The JSON stored in the streams."""
    return json.dumps(
        {
            "type": type(event).__name__,
            "schema": version_of(type(event)),
            "image": image,
            "position": position,
            "at": at,
            "data": asdict(event),
        },
        separators=(",", ":"),
    )


class UnknownEvent(ValueError):
    """A stored entry that this version of freshen cannot read."""


def upcast(kind: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """`data` of a stored `kind` event at `version`, brought to the current version."""
    current = _CURRENT[kind]
    if version > current:
        raise UnknownEvent(f"{kind} version {version} is newer than this freshen ({current})")
    while version < current:
        data = UPCASTERS[(kind, version)](data)
        version += 1
    return data


def decode(raw: str | bytes, stream_id: str = "") -> Recorded:
    """Parse one stored event, upcast to today's version; UnknownEvent for anything unreadable."""
    try:
        doc = from_json(raw)  # pydantic's JSON parser: half the time of json.loads on replay
        kind, version, data = doc["type"], doc["schema"], doc["data"]
        if version != _CURRENT[kind]:
            data = upcast(kind, int(version), data)
        event = _ADAPTERS[kind].validate_python(data)
        return Recorded(doc["image"], int(doc["position"]), doc["at"], event, stream_id)
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        if isinstance(exc, UnknownEvent):
            raise
        raise UnknownEvent(f"unreadable event {stream_id}: {type(exc).__name__}") from None
