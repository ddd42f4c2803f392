"""The append-only event log on Redis Streams: one stream per image plus one global stream.

Appends carry the position the writer expects the image's stream to be at; a Lua script
compares and appends to both streams atomically, so two writers that decided on the same state
cannot both append. Streams are never trimmed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import redis

from shared.constants import GLOBAL_STREAM, IMAGE_STREAM_PREFIX, IMAGES_SET
from shared.errors import ConcurrencyError
from shared.model import eventcodec, events

# KEYS: image stream, global stream, images set. ARGV: expected length, image name, event JSON…
_APPEND = """
local length = redis.call('XLEN', KEYS[1])
if length ~= tonumber(ARGV[1]) then
  return {-1, length}
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
end
redis.call('SADD', KEYS[3], ARGV[2])
return {length + #ARGV - 2, length}
"""

READ_BATCH = 10_000


def image_stream(image: str) -> str:
    return IMAGE_STREAM_PREFIX + image


class EventStore:
    """Reads and appends events; knows nothing about what they mean."""

    def __init__(self, client: redis.Redis, mask: Callable[[str], str] = str) -> None:
        self._redis = client
        self._append = client.register_script(_APPEND)
        self._mask = mask  # secrets never enter the log, whatever an event's text holds

    def length(self, image: str) -> int:
        """How many events the image's stream holds (the next event's position)."""
        return int(self._redis.xlen(image_stream(image)))

    def append(self, image: str, new: Sequence[events.Event], expected: int) -> int:
        """Append `new` at position `expected`; return the stream's new length.

        Raises ConcurrencyError when another writer appended first: reload and decide again.
        """
        if not new:
            return expected
        at = events.now()
        docs = [
            self._mask(eventcodec.encode(image, expected + i, at, e)) for i, e in enumerate(new)
        ]
        keys = [image_stream(image), GLOBAL_STREAM, IMAGES_SET]
        length, found = self._append(keys=keys, args=[expected, image, *docs])
        if length == -1:
            raise ConcurrencyError(f"{image}: expected position {expected}, stream is at {found}")
        return int(length)

    def append_new(self, logs: Mapping[str, Sequence[events.Event]]) -> None:
        """Start the logs of several images in one round trip (an import, a benchmark's seed);
        ConcurrencyError naming the images that already had events (theirs were not added)."""
        at = events.now()
        with self._redis.pipeline(transaction=False) as pipe:
            for image, new in logs.items():
                docs = [self._mask(eventcodec.encode(image, i, at, e)) for i, e in enumerate(new)]
                keys = [image_stream(image), GLOBAL_STREAM, IMAGES_SET]
                self._append(keys=keys, args=[0, image, *docs], client=pipe)
            answers: list[list[int]] = pipe.execute()
        taken = [image for image, (length, _) in zip(logs, answers, strict=True) if length == -1]
        if taken:
            raise ConcurrencyError(f"{', '.join(taken)}: already had events; not appended")

    def read(self, image: str, after_id: str = "-") -> Iterator[events.Recorded]:
        """Events of one image in order, optionally only those after stream id `after_id`."""
        return self._scan(image_stream(image), after_id)

    def read_many(self, after: Mapping[str, str]) -> dict[str, list[events.Recorded]]:
        """Events of several images, each after its stream id ("-": all), in one round trip;
        an image with more than READ_BATCH of them reads the rest on its own."""
        with self._redis.pipeline(transaction=False) as pipe:
            for image, after_id in after.items():
                pipe.xrange(image_stream(image), min=_start(after_id), max="+", count=READ_BATCH)
            answers: list[list[tuple[bytes, dict[bytes, bytes]]]] = pipe.execute()
        found: dict[str, list[events.Recorded]] = {}
        for image, batch in zip(after, answers, strict=True):
            records = [eventcodec.decode(fields[b"e"], sid.decode()) for sid, fields in batch]
            if len(batch) == READ_BATCH:
                records += self.read(image, records[-1].stream_id)
            found[image] = records
        return found

    def read_all(self) -> Iterator[events.Recorded]:
        """Every event of every image in global append order."""
        return self._scan(GLOBAL_STREAM, "-")

    def images(self) -> list[str]:
        """Names of images that have events."""
        return sorted(m.decode() for m in self._redis.smembers(IMAGES_SET))  # type: ignore[union-attr]

    def _scan(self, key: str, after_id: str) -> Iterator[events.Recorded]:
        start = _start(after_id)
        while True:
            batch: list[tuple[bytes, dict[bytes, bytes]]] = self._redis.xrange(  # type: ignore[assignment]
                key, min=start, max="+", count=READ_BATCH
            )
            for stream_id, fields in batch:
                yield eventcodec.decode(fields[b"e"], stream_id.decode())
            if len(batch) < READ_BATCH:
                return
            start = f"({batch[-1][0].decode()}"


def _start(after_id: str) -> str:
    """XRANGE's lower bound for the entries after `after_id` ("-": from the first)."""
    return after_id if after_id == "-" else f"({after_id}"
