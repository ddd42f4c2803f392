"""A local PyPI-compatible JSON endpoint (`<index>/<project>/json`, and one release's
`<index>/<project>/<version>/json` with its `vulnerabilities`) for tests and benchmarks.

Serves realistic release payloads or raw misbehaviour (slow drips, redirect loops, bad bodies),
answers a matching `If-None-Match` with 304, and records every request it answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from packaging.utils import canonicalize_name

from shared.testing.pypireleases import release_payload

INDEX_PATH = "/pypi"
# Bytes written per tick of a slow drip, and the longest pause between ticks.
DRIP_STEP_BYTES = 16
DRIP_MAX_PAUSE_S = 0.25


@dataclass(frozen=True)
class Response:
    """What the server answers for one project."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0
    drip_bytes_per_s: float | None = None
    redirect_loop: bool = False

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


class PyPIServer:
    """Threaded HTTP server on 127.0.0.1 with a free port; use it as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._responses: dict[str, Response] = {}
        self._releases: dict[tuple[str, str], Response] = {}  # (project, version) → answer
        self._requests: list[tuple[str, str, int, int]] = []
        self._connections: set[socket.socket] = set()
        self.stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PyPIServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.pypi = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="pypi-server"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._httpd is None or self._thread is None:
            return
        self.stopping.set()
        self._httpd.shutdown()
        self._thread.join()
        with self._lock:
            for conn in self._connections:  # wake handlers blocked on idle keep-alive reads
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()  # joins the handler threads
        self._httpd = None

    @property
    def index(self) -> str:
        """The index root URL: `<index>/<project>/json` is a project's JSON."""
        if self._httpd is None:
            raise RuntimeError("PyPIServer is not started; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{INDEX_PATH}"

    @property
    def requests(self) -> list[tuple[str, str, int, int]]:
        """A snapshot of (method, path, status, body_bytes_sent) in answer order; status 0 means
        the connection was closed unanswered (server shutting down during `delay_s`)."""
        with self._lock:
            return list(self._requests)

    def set_releases(
        self,
        project: str,
        versions: list[str],
        yanked: Iterable[str] = (),
        uploaded_at: Mapping[str, datetime | None] | None = None,
    ) -> None:
        """Serve a PyPI-shaped payload with these releases (each with one file uploaded at
        `uploaded_at[version]`, default 2020-01-01 plus its position in days)."""
        body = release_payload(project, versions, yanked, uploaded_at)
        self.set_response(project, body=body)

    def set_response(
        self,
        project: str,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
        delay_s: float = 0.0,
        drip_bytes_per_s: float | None = None,
        redirect_loop: bool = False,
    ) -> None:
        """Serve exactly this for the project (after `delay_s`, optionally dripped slowly)."""
        response = Response(status, body, content_type, delay_s, drip_bytes_per_s, redirect_loop)
        with self._lock:
            self._responses[canonicalize_name(project)] = response

    def response_for(self, project: str) -> Response | None:
        with self._lock:
            return self._responses.get(canonicalize_name(project))

    def set_vulnerabilities(
        self, project: str, version: str, vulnerabilities: list[dict[str, object]]
    ) -> None:
        """Serve `<index>/<project>/<version>/json` as PyPI does, with this `vulnerabilities`
        list (entries shaped like PyPI's: id, aliases, details, fixed_in, link, withdrawn)."""
        info = {"name": project, "version": version}
        body = json.dumps({"info": info, "urls": [], "vulnerabilities": vulnerabilities})
        self.set_release_response(project, version, body=body.encode())

    def set_release_response(
        self, project: str, version: str, status: int = 200, body: bytes = b""
    ) -> None:
        """Serve exactly this for `<index>/<project>/<version>/json` (a 503: the vulnerability
        data is down)."""
        with self._lock:
            self._releases[(canonicalize_name(project), version)] = Response(status, body)

    def release_response_for(self, project: str, version: str) -> Response | None:
        with self._lock:
            return self._releases.get((canonicalize_name(project), version))

    def record(self, method: str, path: str, status: int, sent: int) -> int:
        """Log an answer before it is written, so a client that has it also sees it logged."""
        with self._lock:
            self._requests.append((method, path, status, sent))
            return len(self._requests) - 1

    def correct(self, slot: int, sent: int) -> None:
        """Fix the bytes count of a logged answer that was cut short or dripped."""
        with self._lock:
            method, path, status, _ = self._requests[slot]
            self._requests[slot] = (method, path, status, sent)

    def track(self, conn: socket.socket, active: bool) -> None:
        with self._lock:
            (self._connections.add if active else self._connections.discard)(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakePyPI/1.0"

    @property
    def pypi(self) -> PyPIServer:
        return self.server.pypi  # type: ignore[attr-defined, no-any-return]

    def setup(self) -> None:
        super().setup()
        self.pypi.track(self.connection, active=True)

    def finish(self) -> None:
        self.pypi.track(self.connection, active=False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        """Serve the connection until the client closes it, or resets it while this handler
        waits for its next keep-alive request; a reset is expected from a client that stopped
        reading with answer bytes unread (a body over its size limit), and is not an error."""
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read `PyPIServer.requests` instead."""

    def do_GET(self) -> None:
        try:
            self._answer()
        except OSError:  # the client went away mid-answer
            self.close_connection = True

    def _answer(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        found = len(parts) in (3, 4) and parts[0] == INDEX_PATH.strip("/") and parts[-1] == "json"
        if found and len(parts) == 4:  # one release: `<index>/<project>/<version>/json`
            response = self.pypi.release_response_for(parts[1], parts[2])
        else:
            response = self.pypi.response_for(parts[1]) if found else None
        if response is None:
            self._send(404, b'{"message": "Not Found"}', "application/json")
        elif response.delay_s and self.pypi.stopping.wait(response.delay_s):
            self.pypi.record("GET", self.path, 0, 0)  # shutting down: closed unanswered
            self.close_connection = True
        elif response.redirect_loop:
            self._send(302, b"", "text/plain", {"Location": self.path})
        elif response.status == 200 and _matches(self.headers.get("If-None-Match"), response.etag):
            self._send(304, b"", None, {"ETag": response.etag})
        else:
            extra = {"ETag": response.etag} if response.status == 200 else {}
            self._send(
                response.status,
                response.body,
                response.content_type,
                extra,
                response.drip_bytes_per_s,
            )

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
        drip_bytes_per_s: float | None = None,
    ) -> None:
        body = b"" if status == 304 else body
        slot = self.pypi.record("GET", self.path, status, 0 if drip_bytes_per_s else len(body))
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if drip_bytes_per_s is None:
                self.wfile.write(body)
            else:
                self._drip(body, drip_bytes_per_s, slot)
        except OSError:
            if drip_bytes_per_s is None:  # a dripped answer keeps the count of bytes written
                self.pypi.correct(slot, 0)
            raise

    def _drip(self, body: bytes, bytes_per_s: float, slot: int) -> None:
        """Write `body` at about `bytes_per_s`; stop early when the server shuts down."""
        step = max(1, min(DRIP_STEP_BYTES, int(bytes_per_s * DRIP_MAX_PAUSE_S)))
        for start in range(0, len(body), step):
            self.wfile.write(body[start : start + step])
            self.pypi.correct(slot, min(start + step, len(body)))
            if self.pypi.stopping.wait(step / bytes_per_s):
                self.close_connection = True
                return


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison, as RFC 9110 asks for If-None-Match."""
    if not if_none_match:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates
