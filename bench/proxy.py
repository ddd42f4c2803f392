"""A counting HTTP/1.1 proxy in front of one upstream (the local registry): it keeps connections
alive both ways, like the real client and registry do, and counts requests and body bytes."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

# Headers that belong to one connection, not to the message: never relayed.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "te", "upgrade"})
UPSTREAM_TIMEOUT_S = 30


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.requests = 0
        self.body_bytes = 0
        self.local = threading.local()

    def connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        """This handler thread's keep-alive connection to the upstream."""
        if fresh or getattr(self.local, "connection", None) is None:
            self.local.connection = http.client.HTTPConnection(
                self.upstream, timeout=UPSTREAM_TIMEOUT_S
            )
        return self.local.connection  # type: ignore[no-any-return]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._relay()

    def do_HEAD(self) -> None:
        self._relay()

    def do_PUT(self) -> None:
        self._relay()

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            response = self._forward(body, headers, fresh=False)
        except (http.client.HTTPException, OSError):
            response = self._forward(body, headers, fresh=True)
        payload = response.read()
        with self.server.lock:
            self.server.requests += 1
            self.server.body_bytes += len(payload)
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        declared = response.getheader("Content-Length")
        self.send_header(
            "Content-Length", declared if self.command == "HEAD" and declared else str(len(payload))
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(
        self, body: bytes | None, headers: dict[str, str], fresh: bool
    ) -> http.client.HTTPResponse:
        connection = self.server.connection(fresh)
        connection.request(self.command, self.path, body=body, headers=headers)
        return connection.getresponse()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the counters are the log."""


class CountingProxy:
    """Use as a context manager; `host` is what clients are given instead of the upstream."""

    def __init__(self, upstream: str) -> None:
        self._server = _Server(upstream)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def counts(self) -> tuple[int, int]:
        """(requests answered, response body bytes sent) so far."""
        with self._server.lock:
            return self._server.requests, self._server.body_bytes

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
