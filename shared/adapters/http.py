"""The one HTTP session factory: timeouts, a total deadline for headers and for the body,
bounded retries with backoff, capped Retry-After.

PyPI and registry clients build their session here so retry policy lives in one place.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from shared.config import Settings
from shared.errors import TransientError, UpstreamError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "freshen/0.1 (+https://github.com/freshen/freshen)"


class CappedRetry(Retry):
    """urllib3's Retry, but a Retry-After longer than `cap_s` is cut to `cap_s`.

    A registry asking for an hour would otherwise block a worker for an hour inside one request;
    the task-level retry with backoff takes over after this.
    """

    cap_s: float = 30.0

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.cap_s)

    def new(self, **kw: Any) -> CappedRetry:
        fresh = super().new(**kw)
        fresh.cap_s = self.cap_s
        return fresh


class _Watchdog:
    """One thread that calls each registered callback when its deadline passes (unless it was
    cancelled first): a deadline per request without a thread per request."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Any]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, after_s: float, callback: Any) -> int:
        handle = next(self._ids)
        with self._wake:
            heapq.heappush(self._due, (time.monotonic() + after_s, handle, callback))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, daemon=True, name="deadline")
                self._thread.start()
            if self._due[0][1] == handle:  # only an earlier deadline changes the thread's wait
                self._wake.notify()
        return handle

    def cancel(self, handle: int) -> None:
        with self._wake:
            self._cancelled.add(handle)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due:
                    self._wake.wait()
                at, handle, callback = self._due[0]
                if handle in self._cancelled:
                    heapq.heappop(self._due)
                    self._cancelled.discard(handle)
                    continue
                wait = at - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._due)
            with suppress(Exception):
                callback()


_WATCHDOG = _Watchdog()


class _HeaderDeadline:
    """The status line and headers must arrive within `deadline_s` in total: the per-read
    timeout alone lets a server that drips one header byte at a time hold a worker forever.
    Past the deadline the socket is shut down and the request fails like a dropped connection."""

    deadline_s = 10.0
    sock: socket.socket | None
    _expired = False

    def getresponse(self) -> Any:
        self._expired = False
        handle = _WATCHDOG.watch(self.deadline_s, self._abort)
        try:
            response = super().getresponse()  # type: ignore[misc]
        finally:
            _WATCHDOG.cancel(handle)
        if self._expired:  # what arrived before the shutdown is a truncated answer
            response.close()
            raise TimeoutError(f"headers incomplete after {self.deadline_s:g} s")
        return response

    def _abort(self) -> None:
        self._expired = True
        if self.sock is not None:
            with suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections enforce the header deadline."""

    def __init__(self, deadline_s: float, **kwargs: Any) -> None:
        self._deadline_s = deadline_s
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        limits = {"deadline_s": self._deadline_s}
        plain = type("Conn", (_HeaderDeadline, HTTPConnection), limits)
        tls = type("TLSConn", (_HeaderDeadline, HTTPSConnection), limits)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("TLSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }


class _Session(requests.Session):
    """requests' Session, but it reads the environment (proxy variables, no_proxy, the CA
    bundle) once per origin, not for every request: that lookup walks the whole environment,
    about 0.5 ms a request, a third of an idle check's own time. A process's environment does
    not change while it runs (its settings are read once, too)."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, ...], Any] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if proxies:  # proxies given for this request: merged as requests does
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url if isinstance(url, str) else str(url))
        key = (parts.scheme, parts.netloc, str(stream), str(verify), str(cert))
        found = self._environment.get(key)
        if found is None:
            found = super().merge_environment_settings(url, {}, stream, verify, cert)
            self._environment[key] = found
        return {**found, "proxies": dict(found["proxies"])}


def make_session(settings: Settings) -> requests.Session:
    """A session whose requests retry connection errors, 429 and 5xx with exponential backoff."""
    retry = CappedRetry(
        total=settings.http_retries,
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "PUT"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    retry.cap_s = settings.retry_after_max_s
    session = _Session()
    session.max_redirects = 5
    adapter = _DeadlineAdapter(settings.http_timeout_s, max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def read_body(response: requests.Response, limit_bytes: int, deadline_s: float, what: str) -> bytes:
    """Read a streamed response body; fail past `limit_bytes` or after `deadline_s` in total.

    The per-read timeout of requests does not stop a server that drips one byte at a time.
    """
    deadline = time.monotonic() + deadline_s
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        response.close()
        raise UpstreamError(f"{what}: response of {declared} bytes exceeds {limit_bytes}")
    chunks: list[bytes] = []
    size = 0
    try:
        # read1 returns what one socket read gave: iter_content would block until a whole
        # chunk arrived, so a server dripping bytes would never reach the deadline check.
        while chunk := response.raw.read1(65536, decode_content=True):
            size += len(chunk)
            if size > limit_bytes:
                raise UpstreamError(f"{what}: response exceeds {limit_bytes} bytes")
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TransientError(f"{what}: response still incomplete after {deadline_s:g} s")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"{what}: reading the response failed: {type(exc).__name__}") from None
    finally:
        response.close()
    return b"".join(chunks)


def finish(response: requests.Response) -> None:
    """Done with a response: keep its connection for the next request when it has no body left
    (a HEAD, a 304, an empty PUT answer), close it otherwise.

    `Response.close()` drops the pooled connection, so an idle check cycle would open a new TCP
    (and TLS) connection per request.
    """
    head = response.request is not None and response.request.method == "HEAD"
    empty = head or response.status_code in (204, 304)
    empty = empty or response.headers.get("Content-Length") == "0"
    if empty:
        response.raw.drain_conn()
        response.raw.release_conn()
    else:
        response.close()
