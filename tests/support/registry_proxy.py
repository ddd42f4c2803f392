"""Loopback HTTP servers that stand in front of (or instead of) a registry in tests.

`LoopbackServer` answers every request with what a responder function returns and records the
requests it saw: scripted misbehaviour (500s, 429s, missing digest headers, slow answers).
`AuthProxy` guards a real registry with the Docker token flow (401 + Bearer challenge, tokens
at /token for one pair of basic credentials) or with plain Basic auth, and forwards authorized
calls to the real registry unchanged.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from tests.conftest import REGISTRY, registry_credentials

# Upstream response headers an AuthProxy passes on; hop-by-hop ones are the server's own.
_FORWARDED_HEADERS = frozenset(
    {"content-type", "content-length", "docker-content-digest", "location", "etag"}
)
# Request headers an AuthProxy passes on to the real registry.
_REQUEST_HEADERS = frozenset({"accept", "content-type"})
_WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Seen:
    """One request a server answered; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What a responder answers; Content-Length is added unless given (HEAD of a proxy)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


Responder = Callable[[Seen], Reply]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        seen = Seen(self.command, self.path, headers, body)
        with self.server.lock:
            self.server.seen.append(seen)
        reply = self.server.responder(seen)
        time.sleep(reply.delay_s)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if not any(name.lower() == "content-length" for name in reply.headers):
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a timeout test); nothing to answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean; `seen` records the traffic


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for slow answers, so no thread outlives a test

    def __init__(self, responder: Responder) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responder = responder
        self.seen: list[Seen] = []
        self.lock = threading.Lock()


class LoopbackServer:
    """A threaded HTTP server on a free 127.0.0.1 port; use as a context manager."""

    def __init__(self, responder: Responder) -> None:
        self._server = _Server(responder)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry host a client is given."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def seen(self) -> list[Seen]:
        with self._server.lock:
            return list(self._server.seen)

    def __enter__(self) -> LoopbackServer:
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


def forward(upstream: str, seen: Seen) -> Reply:
    """Send `seen` to the registry at `upstream` (host:port, plain HTTP) and return its answer."""
    connection = http.client.HTTPConnection(upstream, timeout=30)
    try:
        headers = {k: v for k, v in seen.headers.items() if k in _REQUEST_HEADERS}
        if upstream == REGISTRY:  # the shared registry needs its credentials for every call
            headers["authorization"] = basic_authorization(*registry_credentials())
        connection.request(seen.method, seen.path, body=seen.body or None, headers=headers)
        response = connection.getresponse()
        body = response.read()
        kept = {k: v for k, v in response.getheaders() if k.lower() in _FORWARDED_HEADERS}
        return Reply(response.status, kept, body)
    finally:
        connection.close()


def basic_authorization(username: str, password: str) -> str:
    """The `Authorization` value of HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class AuthProxy:
    """A registry front that demands auth, then forwards to a real registry.

    scheme "bearer": 401 with `WWW-Authenticate: Bearer realm=…/token,service="test",scope=…`
    unless the request carries a token issued for a scope covering it; /token issues tokens
    (under `token_field`) only for the right basic credentials and service.
    scheme "basic": 401 with `WWW-Authenticate: Basic` unless the credentials are sent.
    """

    SERVICE = "test"

    def __init__(
        self,
        username: str,
        password: str,
        upstream: str = "127.0.0.1:5000",
        scheme: str = "bearer",
        token_field: str = "token",
    ) -> None:
        self._credentials = basic_authorization(username, password)
        self._upstream = upstream
        self._scheme = scheme
        self._token_field = token_field
        self._granted: dict[str, str] = {}  # token -> scope it was issued for
        self._server = LoopbackServer(self._respond)

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def seen(self) -> list[Seen]:
        return self._server.seen

    def token_scopes(self) -> list[str]:
        """The scope of every token request, in order (granted or not)."""
        paths = (urlsplit(s.path) for s in self.seen)
        return [parse_qs(p.query).get("scope", [""])[0] for p in paths if p.path == "/token"]

    def __enter__(self) -> AuthProxy:
        self._server.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.__exit__(exc_type, exc, tb)

    def _respond(self, seen: Seen) -> Reply:
        path = urlsplit(seen.path)
        if path.path == "/token" and self._scheme == "bearer":
            return self._issue(seen, parse_qs(path.query))
        if not path.path.startswith("/v2/"):
            return Reply(404)
        actions = "pull,push" if seen.method in _WRITE_METHODS else "pull"
        scope = f"repository:{_repository(path.path)}:{actions}"
        if self._authorized(seen.headers.get("authorization", ""), scope):
            return forward(self._upstream, seen)
        if self._scheme == "basic":
            return _unauthorized('Basic realm="test registry"')
        realm = f"http://{self.host}/token"
        return _unauthorized(f'Bearer realm="{realm}",service="{self.SERVICE}",scope="{scope}"')

    def _authorized(self, authorization: str, scope: str) -> bool:
        if self._scheme == "basic":
            return secrets.compare_digest(authorization, self._credentials)
        granted = self._granted.get(authorization.removeprefix("Bearer "))
        return granted is not None and _covers(granted, scope)

    def _issue(self, seen: Seen, query: dict[str, list[str]]) -> Reply:
        sent = seen.headers.get("authorization", "")
        if not secrets.compare_digest(sent, self._credentials):
            return _unauthorized('Basic realm="test token service"')
        if query.get("service") != [self.SERVICE] or len(query.get("scope", [])) != 1:
            return Reply(400, {"Content-Type": "application/json"}, b'{"details":"bad query"}')
        token = secrets.token_urlsafe(24)
        self._granted[token] = query["scope"][0]
        body = json.dumps({self._token_field: token, "expires_in": 300}).encode()
        return Reply(200, {"Content-Type": "application/json"}, body)


def _unauthorized(challenge: str) -> Reply:
    body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
    headers = {"WWW-Authenticate": challenge, "Content-Type": "application/json"}
    return Reply(401, headers, body.encode())


def _repository(path: str) -> str:
    """`library/python` from `/v2/library/python/manifests/3.12` (or `/blobs/…`)."""
    rest = path.removeprefix("/v2/")
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        if marker in rest:
            return rest.rsplit(marker, 1)[0]
    return rest


def _covers(granted: str, needed: str) -> bool:
    """Whether a token for scope `granted` allows `needed` (same repository, more actions)."""
    granted_name, _, granted_actions = granted.rpartition(":")
    needed_name, _, needed_actions = needed.rpartition(":")
    have = set(granted_actions.split(","))
    return granted_name == needed_name and set(needed_actions.split(",")) <= have
