"""The notifier process: follows the global event stream with a consumer group, hands each
chosen event's message to every target's outbox, and delivers each outbox on a thread of its
own, so a target that is down (retried with backoff) holds up neither the others nor the
pipeline, which never waits for the notifier.

    python -m shared.notify     # or `freshen notify`
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from shared.adapters.eventstore import EventStore
from shared.config import Settings, load_settings
from shared.logs import configure_logging
from shared.model.aggregate import ImageState, apply
from shared.model.eventcodec import UnknownEvent
from shared.notify.messages import Facts, Notice, check_failing, message
from shared.notify.outbox import Claimed, Outbox
from shared.notify.targets import Sender, Target, targets
from shared.secrets import Masker

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # one read of the stream waits this long, then timers and claims run
# Touched after every read of the stream: compose's healthcheck looks at its age.
HEARTBEAT = Path(tempfile.gettempdir()) / "freshen-notify.alive"
BATCH = 20  # messages of one outbox looked at per round


def seconds(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


class Notifier:
    def __init__(self, settings: Settings, client: redis.Redis, mask: Masker) -> None:
        self._settings = settings
        self._store = EventStore(client, mask)
        self._mask = mask
        self._targets = targets([u.get_secret_value() for u in settings.notify_urls])
        self._outbox = Outbox(client, [t.id for t in self._targets])
        self._chosen = frozenset(settings.notify_events)
        self._consumer = settings.notify_consumer or socket.gethostname()
        self._owner = f"{self._consumer} pid {os.getpid()}"
        self._wake = {t.id: threading.Event() for t in self._targets}
        self._claim_idle_ms = int(settings.notify_claim_idle_s * 1000)
        self.stop = threading.Event()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._deliver_loop, args=(t,), name=t.label, daemon=True)
            for t in self._targets
        ]
        labels = ", ".join(t.label for t in self._targets) or "none (nothing is sent)"
        joined, started, next_claim = False, False, 0.0
        while not self.stop.is_set():
            try:
                if not joined:  # at start, and after Redis lost the group (a flush, a restore)
                    self._outbox.join({t.id: t.label for t in self._targets})
                    while own := self._outbox.read(self._consumer, "0", None):
                        self._take(own)  # what it read before a restart under the same name
                    joined = True
                if not started:
                    for thread in threads:
                        thread.start()
                    started = True
                    log.info("notifier %s: targets %s; events %s", self._consumer, labels,
                             sorted(self._chosen))  # fmt: skip
                if time.monotonic() >= next_claim:
                    self._take(self._outbox.claim(self._consumer, self._claim_idle_ms))
                    next_claim = time.monotonic() + self._settings.notify_claim_idle_s / 4
                self._take(self._outbox.read(self._consumer, ">", BLOCK_MS))
                self._timers()
                HEARTBEAT.touch()
            except redis.RedisError as exc:
                log.warning("Redis: %s; trying again in 1 s", exc)
                joined = False
                self.stop.wait(1.0)
        for thread in threads:
            thread.join(timeout=10)

    # ---- reading the log
    def _take(self, entries: list[Claimed]) -> None:
        for entry in entries:
            notice = _notice(entry)
            if notice is None:
                log.warning("event %s is unreadable; not notified", entry.stream_id)
                self._outbox.hand_on(entry.stream_id, None)
                continue
            if notice.type == "CheckFailed":
                first = {"stream_id": notice.stream_id, "at": notice.at, **notice.data}
                self._outbox.check_failed(notice.image, first)
            elif notice.type == "CheckRecovered":
                self._outbox.check_recovered(notice.image)
            found = None
            try:
                if notice.type in self._chosen:
                    found = message(notice, self._facts(notice), self._chosen)
            except redis.RedisError:
                raise
            except Exception:  # a formatter's bug must not stop every later notification
                log.exception("%s: %s %s not notified", notice.image, notice.type, entry.stream_id)
            self._outbox.hand_on(entry.stream_id, found)
            if found is not None:
                log.info("%s: %s queued (%s)", notice.image, notice.type, notice.stream_id)
                self._wake_all()

    def _facts(self, notice: Notice) -> Facts:
        """The notice's run as the image's log shows it up to the notice (None if unreadable)."""
        state = ImageState(notice.image)
        try:
            for record in self._store.read(notice.image):
                if record.position > notice.position >= 0:
                    break
                apply(state, record)
        except UnknownEvent as exc:
            log.warning("%s: log unreadable for a notification's facts: %s", notice.image, exc)
        run = state.runs.get(str(notice.data.get("run_id", "")))
        return Facts(run, self._settings.infra_retries)

    def _timers(self) -> None:
        """CheckFailed notifies once an image's checks have failed long enough."""
        if "CheckFailed" not in self._chosen:
            return
        for image, first in self._outbox.failing_checks().items():
            failing_s = time.time() - seconds(first["at"])
            if first.get("notified") or failing_s < self._settings.notify_check_failing_s:
                continue
            data = {k: v for k, v in first.items() if k not in ("stream_id", "at", "notified")}
            notice = Notice("CheckFailed", image, first["at"], first["stream_id"], data)
            threshold_s = self._settings.notify_check_failing_s
            self._outbox.hand_on("", check_failing(notice, threshold_s))
            self._outbox.check_notified(image)
            self._wake_all()

    def _wake_all(self) -> None:
        for wake in self._wake.values():
            wake.set()

    # ---- delivering to one target
    def _deliver_loop(self, target: Target) -> None:
        sender = Sender(target, self._mask)
        failures, resume_at = 0, 0.0
        while not self.stop.is_set():
            if time.monotonic() < resume_at:
                self.stop.wait(min(resume_at - time.monotonic(), 1.0))
                continue
            self._wake[target.id].clear()
            try:
                keys = self._outbox.due(target.id, BATCH)
                if not keys:
                    self._wake[target.id].wait(1.0)
                    continue
                for key in keys:
                    if self.stop.is_set() or not self._deliver(sender, key):
                        break
                else:
                    failures = 0
                    continue
            except redis.RedisError as exc:
                log.warning("%s: Redis: %s; trying again in 1 s", target.label, exc)
                self.stop.wait(1.0)
                continue
            if not self.stop.is_set():
                failures += 1
                wait_s = min(
                    self._settings.notify_retry_initial_s * 2 ** (failures - 1),
                    self._settings.notify_retry_max_s,
                )
                resume_at = time.monotonic() + wait_s
                log.warning("%s: retrying in %.0f s (failure %d)", target.label, wait_s, failures)

    def _deliver(self, sender: Sender, key: str) -> bool:
        """Send one message; False when the service did not take it."""
        target = sender.target
        found, earlier = self._outbox.begin(target.id, key, f"{self._owner} {time.time():.0f}")
        if found is None:
            return True
        if earlier:
            log.warning("%s: %s again: %s began sending it and stopped (it may have arrived)",
                        target.label, key, earlier)  # fmt: skip
        error = sender.send(found.title, found.body, found.level)
        if error:
            self._outbox.failed(target.id, target.label, key, error)
            log.warning("%s: %s not delivered: %s", target.label, key, error)
            return False
        self._outbox.delivered(target.id, key)
        log.info("%s: %s delivered (%s)", target.label, key, found.kind)
        return True


def _notice(entry: Claimed) -> Notice | None:
    if entry.raw is None:
        return None
    try:
        doc: dict[str, Any] = json.loads(entry.raw)
        position = int(doc["position"])
        return Notice(doc["type"], doc["image"], doc["at"], entry.stream_id, doc["data"], position)
    except (KeyError, TypeError, ValueError):
        return None


def main() -> int:
    settings = load_settings()
    masker = Masker.from_settings(settings)
    configure_logging(settings.log_level, masker)
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    notifier = Notifier(settings, client, masker)

    def stopped(_signal: int, _frame: FrameType | None) -> None:
        notifier.stop.set()

    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    notifier.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
