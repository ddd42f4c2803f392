"""The one HTTP session factory: timeouts, bounded retries with backoff, capped Retry-After.

PyPI and registry clients build their session here so retry policy lives in one place.
"""

from __future__ import annotations

import time
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
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
    session = requests.Session()
    session.max_redirects = 5
    adapter = HTTPAdapter(max_retries=retry)
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
