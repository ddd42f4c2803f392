"""The notifier's delivery state in Redis, in keys of its own (never an image event).

An event read from the global stream is handed on atomically: its message is stored, queued in
each target's outbox (a sorted set in log order), and the stream entry acknowledged, in one Lua
script. A delivery marks the message in flight before sending and, once the service accepted it,
sets the target's delivered marker (the idempotency key is the event's stream id), removes it
from the outbox and clears the in-flight mark, again in one script. So the only duplicate there
can be is a message sent and then not recorded (the notifier died in between); the next attempt
finds the in-flight mark, and counts it as `resent`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.constants import GLOBAL_STREAM, NOTIFY_GROUP, NOTIFY_PREFIX
from shared.notify.messages import Message

OUTBOX = f"{NOTIFY_PREFIX}outbox:"  # + target id: sorted set of message keys, log order
DELIVERED = f"{NOTIFY_PREFIX}delivered:"  # + target id + ":" + key: the idempotency marker
INFLIGHT = f"{NOTIFY_PREFIX}inflight:"  # + target id: hash key → who sends it since when
MESSAGES = f"{NOTIFY_PREFIX}messages"  # hash key → message JSON, until every target has it
STATS = f"{NOTIFY_PREFIX}stats"  # hash "<delivered|failed|resent>:<target id>" → count
TARGETS = f"{NOTIFY_PREFIX}targets"  # hash target id → label (metrics show labels)
FAILURES = f"{NOTIFY_PREFIX}failures"  # stream of failed deliveries: target, key, error (masked)
CHECKS = f"{NOTIFY_PREFIX}checkfailing"  # hash image → the first CheckFailed of its failing stretch
DELIVERED_TTL_S = 30 * 24 * 3600  # a marker outlives any redelivery of its event
FAILURES_KEPT = 10_000

# KEYS: stream, messages, then (outbox, delivered marker) per target.
# ARGV: group, stream entry id ("": none), message key ("": none), message JSON, score.
_INTAKE = """
if ARGV[3] ~= '' then
  local queued = 0
  for i = 3, #KEYS, 2 do
    if redis.call('EXISTS', KEYS[i + 1]) == 0 then
      queued = queued + redis.call('ZADD', KEYS[i], 'NX', ARGV[5], ARGV[3])
    end
  end
  if queued > 0 then
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  end
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""
# KEYS: outbox, delivered marker, in-flight hash, messages, stats. ARGV: key, owner, stats field.
# Returns {status, message, earlier owner}: status "send" or "done" (nothing left to send).
_BEGIN = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'done', '', ''}
end
local message = redis.call('HGET', KEYS[4], ARGV[1])
if not message then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'done', '', ''}
end
local earlier = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if earlier ~= '' then
  redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return {'send', message, earlier}
"""
# KEYS: outbox, delivered marker, in-flight hash, messages, stats, then every target's outbox.
# ARGV: key, time, marker TTL, stats field.
_DELIVERED = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
for i = 6, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then
    return 1
  end
end
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""
# KEYS: outbox, in-flight hash, stats, failures.
# ARGV: key, stats field, target label, error, time, failures kept.
# The failed message goes to the back of its outbox: one the service always refuses must not
# hold up the others.
_FAILED = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('ZADD', KEYS[1], 'XX', tonumber(last[2]) + 1, ARGV[1])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'target', ARGV[3], 'key', ARGV[1],
  'error', ARGV[4], 'at', ARGV[5])
return 1
"""


def score(stream_id: str) -> float:
    """Log order of a stream id (milliseconds, then sequence) as a sorted-set score."""
    millis, _, seq = stream_id.partition("-")
    return float(int(millis) * 1000 + min(int(seq or 0), 999))


@dataclass(frozen=True)
class Claimed:
    stream_id: str
    raw: bytes | None  # None: the entry was deleted from the stream


class Outbox:
    """Delivery state of the configured targets (by id)."""

    def __init__(self, client: redis.Redis, target_ids: list[str]) -> None:
        self._redis = client
        self._targets = target_ids
        self._intake = client.register_script(_INTAKE)
        self._begin = client.register_script(_BEGIN)
        self._delivered = client.register_script(_DELIVERED)
        self._failed = client.register_script(_FAILED)

    # ---- the consumer group on the global stream
    def join(self, labels: dict[str, str]) -> None:
        """Create the group (at the stream's end: events from the first start on) unless it
        exists, and name the targets for the metrics."""
        try:
            self._redis.xgroup_create(GLOBAL_STREAM, NOTIFY_GROUP, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if labels:
            self._redis.hset(TARGETS, mapping=dict(labels))  # type: ignore[arg-type]

    def read(self, consumer: str, since: str, block_ms: int | None) -> list[Claimed]:
        """Entries for `consumer`: its own unacknowledged ones (`since` "0") or new ones (">")."""
        found: Any = self._redis.xreadgroup(
            NOTIFY_GROUP, consumer, {GLOBAL_STREAM: since}, count=100, block=block_ms
        )
        return [_claimed(i, f) for _, entries in found or [] for i, f in entries]

    def claim(self, consumer: str, idle_ms: int) -> list[Claimed]:
        """Entries another consumer read and left unacknowledged for `idle_ms` (it died)."""
        found: list[Claimed] = []
        start = "0-0"
        while True:
            answer: Any = self._redis.xautoclaim(
                GLOBAL_STREAM, NOTIFY_GROUP, consumer, idle_ms, start, count=100
            )
            found += [_claimed(i, f) for i, f in answer[1]]
            start = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
            if start == "0-0":
                return found

    def hand_on(self, stream_id: str, message: Message | None) -> None:
        """Queue `message` for every target that has not had it, and acknowledge the entry."""
        keys: list[str] = [GLOBAL_STREAM, MESSAGES]
        args: list[str | float] = [NOTIFY_GROUP, stream_id, "", "", 0.0]
        if message is not None and self._targets:
            for target in self._targets:
                keys += [OUTBOX + target, f"{DELIVERED}{target}:{message.key}"]
            args[2:] = [message.key, message.to_json(), score(message.key.removeprefix("check-"))]
        self._intake(keys=keys, args=args)

    # ---- deliveries to one target
    def due(self, target: str, count: int) -> list[str]:
        keys: list[bytes] = self._redis.zrange(OUTBOX + target, 0, count - 1)  # type: ignore[assignment]
        return [k.decode() for k in keys]

    def begin(self, target: str, key: str, owner: str) -> tuple[Message | None, str]:
        """The message to send and who had begun sending it before (a crash: "" if nobody);
        (None, "") when it needs no sending."""
        keys = [OUTBOX + target, f"{DELIVERED}{target}:{key}", INFLIGHT + target, MESSAGES, STATS]
        status, raw, earlier = self._begin(keys=keys, args=[key, owner, f"resent:{target}"])
        if status != b"send":
            return None, ""
        return Message.from_json(raw), earlier.decode()

    def delivered(self, target: str, key: str) -> None:
        keys = [OUTBOX + target, f"{DELIVERED}{target}:{key}", INFLIGHT + target, MESSAGES, STATS]
        keys += [OUTBOX + t for t in self._targets]
        args: list[str | int] = [key, f"{time.time():.3f}", DELIVERED_TTL_S, f"delivered:{target}"]
        self._delivered(keys=keys, args=args)

    def failed(self, target: str, label: str, key: str, error: str) -> None:
        keys = [OUTBOX + target, INFLIGHT + target, STATS, FAILURES]
        args: list[str | int] = [key, f"failed:{target}", label, error, f"{time.time():.3f}"]
        args.append(FAILURES_KEPT)
        self._failed(keys=keys, args=args)

    # ---- checks failing for a while
    def check_failed(self, image: str, first: dict[str, Any]) -> None:
        """Remember the first failure of a stretch; later ones only update its error."""
        current = self._redis.hget(CHECKS, image)
        if current is not None:
            first = {**json.loads(current), "error": first["error"]}
        self._redis.hset(CHECKS, image, json.dumps(first))

    def check_notified(self, image: str) -> None:
        current = self._redis.hget(CHECKS, image)
        if current is not None:
            self._redis.hset(CHECKS, image, json.dumps({**json.loads(current), "notified": True}))

    def check_recovered(self, image: str) -> None:
        self._redis.hdel(CHECKS, image)

    def failing_checks(self) -> dict[str, dict[str, Any]]:
        found: dict[bytes, bytes] = self._redis.hgetall(CHECKS)  # type: ignore[assignment]
        return {image.decode(): json.loads(doc) for image, doc in found.items()}


def _claimed(stream_id: bytes | str, fields: dict[bytes, bytes] | None) -> Claimed:
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return Claimed(sid, (fields or {}).get(b"e"))
