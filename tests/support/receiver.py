"""A real HTTP receiver on 127.0.0.1 for Apprise's `json://` and `form://` URLs: it records
every POST (path, content type, the payload as parsed, when it came) and can go down and come
back on the same port."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

EVENT_LINE = re.compile(r"^event: (\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    payload: dict[str, Any]
    at: float

    @property
    def key(self) -> str:
        """The notification's idempotency key: the event id its body names."""
        found = EVENT_LINE.search(str(self.payload.get("message", "")))
        return found.group(1) if found else ""


class Receiver:
    def __init__(self, delay_s: float = 0.0) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.delay_s = delay_s
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = self.headers.get("Content-Type", "")
                if "json" in kind:
                    payload = json.loads(body)
                else:
                    payload = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                time.sleep(receiver.delay_s)
                with receiver._lock:
                    receiver.received.append(Received(self.path, kind, payload, time.time()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def got(self, path: str = "") -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith("/" + path)]

    def wait_for(self, count: int, timeout_s: float, path: str = "") -> list[Received]:
        """At least `count` distinct keys received on `path`; all received there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.got(path)
            if len({r.key for r in found}) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{len(self.got(path))} of {count} notifications on /{path}")
