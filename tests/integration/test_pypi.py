"""PyPIClient against a local PyPI double (shared.testing.pypi_server), real Redis and real PyPI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from packaging.version import Version

from shared.adapters.pypi import CACHED_RELEASES, PyPIClient
from shared.config import Settings
from shared.constants import HTTP_CACHE_PREFIX
from shared.errors import InvalidInput, TransientError, UpstreamError
from shared.testing.pypi_server import PyPIServer

pytestmark = pytest.mark.timeout(20)

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
REAL_PYPI = "https://pypi.org/pypi"


def settings(**overrides: Any) -> Settings:
    """Short timeouts, no retries unless asked; tests/conftest.py drops FRESHEN_* variables."""
    values = {"http_timeout_s": 1.0, "http_retries": 0, **overrides}
    return Settings(redis_url=REDIS_TEST_URL, **values)


@pytest.fixture
def cache() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.ping()  # no Redis is a failure, not a skip
    yield client
    client.close()


@pytest.fixture
def server(cache: redis.Redis) -> Iterator[PyPIServer]:
    with PyPIServer() as running:
        yield running
        for key in cache.scan_iter(match=f"{HTTP_CACHE_PREFIX}{running.index}/*"):
            cache.delete(key)


@pytest.fixture
def client(cache: redis.Redis) -> Iterator[PyPIClient]:
    with PyPIClient(settings(), cache) as made:
        yield made


def statuses(server: PyPIServer) -> list[int]:
    return [status for _, _, status, _ in server.requests]


def test_newest_release(server: PyPIServer, client: PyPIClient) -> None:
    server.set_releases("tool", ["1.2.0", "1.9.9", "1.10.0", "2.0.0rc1"])
    assert client.newest_release(server.index, "tool", prereleases=False) == "1.10.0"
    assert client.newest_release(server.index, "tool", prereleases=True) == "2.0.0rc1"
    assert server.requests[0][:2] == ("GET", "/pypi/tool/json")


def test_unchanged_project_costs_a_304(
    server: PyPIServer, client: PyPIClient, cache: redis.Redis
) -> None:
    server.set_releases("tool", ["1.0.0", "1.1.0", "1.2.0b1"])
    assert client.newest_release(server.index, "tool", prereleases=False) == "1.1.0"
    assert client.newest_release(server.index, "tool", prereleases=False) == "1.1.0"
    assert client.newest_release(server.index, "tool", prereleases=True) == "1.2.0b1"
    assert statuses(server) == [200, 304, 304]  # 304 only for a matching If-None-Match
    assert [sent for *_, sent in server.requests][1:] == [0, 0]
    cached = cache.hgetall(f"{HTTP_CACHE_PREFIX}{server.index}/tool/json")
    # the qualifying releases newest first, each with its upload time (for min_release_age)
    assert cached[b"final"] == b"1.1.0=1577923200,1.0.0=1577836800"
    assert cached[b"any"].startswith(b"1.2.0b1=1578009600,1.1.0=")
    assert sum(len(v) for v in cached.values()) < 200  # answers and ETag, not the body


def test_age_gate_past_the_kept_releases_asks_unconditionally(
    server: PyPIServer, client: PyPIClient
) -> None:
    """The cache keeps the newest CACHED_RELEASES with upload times; when all of them are too
    young the answer cannot come from it, so the one request of the check is unconditional."""
    versions = [f"1.{i}.0" for i in range(CACHED_RELEASES + 6)]
    young = {v: datetime.now(UTC) for v in versions[1:]}  # 1.0.0 was uploaded in 2020
    server.set_releases("tool", versions, uploaded_at=young)
    first = client.offer(server.index, "tool", False, min_age_s=3600)
    assert first.candidate == "1.0.0" and first.waiting and first.waiting.version == versions[-1]
    assert client.offer(server.index, "tool", False, min_age_s=3600) == first
    assert client.offer(server.index, "tool", False, min_age_s=0).candidate == versions[-1]
    assert statuses(server) == [200, 200, 304]


def test_upload_time_of_one_release(server: PyPIServer, client: PyPIClient) -> None:
    server.set_releases("tool", [f"1.{i}.0" for i in range(CACHED_RELEASES + 6)])
    day = 86400
    assert client.uploaded(server.index, "tool", "1.0.0") == 1577836800  # not kept: asked
    assert client.uploaded(server.index, "tool", "1.69") == 1577836800 + 69 * day  # kept
    assert statuses(server) == [200]
    with pytest.raises(UpstreamError, match=r"PyPI project tool has no release 9\.9\.9"):
        client.uploaded(server.index, "tool", "9.9.9")


def test_new_release_is_seen_after_cached_answer(server: PyPIServer, client: PyPIClient) -> None:
    server.set_releases("tool", ["1.0.0"])
    assert client.newest_release(server.index, "tool", prereleases=False) == "1.0.0"
    server.set_releases("tool", ["1.0.0", "1.0.1"])
    assert client.newest_release(server.index, "tool", prereleases=False) == "1.0.1"
    assert statuses(server) == [200, 200]


def test_tampered_cache_is_revalidated(
    server: PyPIServer, client: PyPIClient, cache: redis.Redis
) -> None:
    server.set_releases("tool", ["1.0.0"])
    client.newest_release(server.index, "tool", prereleases=False)
    cache.hset(f"{HTTP_CACHE_PREFIX}{server.index}/tool/json", "final", "1.0; rm -rf /")
    with pytest.raises(InvalidInput, match="not a PEP 440 version"):
        client.newest_release(server.index, "tool", prereleases=False)


def test_not_found_names_project(server: PyPIServer, client: PyPIClient) -> None:
    with pytest.raises(UpstreamError, match=r"PyPI project missing-tool not found at http://"):
        client.newest_release(server.index, "missing-tool", prereleases=False)


def test_other_client_error(server: PyPIServer, client: PyPIClient) -> None:
    server.set_response("tool", status=403, body=b'{"message": "Forbidden"}')
    with pytest.raises(UpstreamError, match="answered HTTP 403"):
        client.newest_release(server.index, "tool", prereleases=False)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"info": {}, "releases": {"1.0.0": [{"yanked": fal', "application/json"),  # truncated
        (b"<html>Gateway</html>", "text/html"),
        (b'{"releases": {}}', "text/plain"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # nesting too deep to decode
        (b'["not", "a", "pypi", "answer"]', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json; charset=utf-8"),
    ],
)
def test_malformed_answer(
    server: PyPIServer, client: PyPIClient, body: bytes, content_type: str
) -> None:
    server.set_response("tool", body=body, content_type=content_type)
    with pytest.raises(UpstreamError, match="malformed answer"):
        client.newest_release(server.index, "tool", prereleases=False)


def test_body_over_limit(server: PyPIServer, cache: redis.Redis) -> None:
    server.set_releases("tool", [f"1.{i}.0" for i in range(100)])
    with (
        PyPIClient(settings(max_response_bytes=1000), cache) as small,
        pytest.raises(UpstreamError, match="exceeds 1000"),
    ):
        small.newest_release(server.index, "tool", prereleases=False)


@pytest.mark.timeout(15)
def test_slow_drip_fails_within_deadline(server: PyPIServer, cache: redis.Redis) -> None:
    server.set_response("tool", body=b" " * 100_000 + b"{}", drip_bytes_per_s=200)
    started = time.monotonic()
    with (
        PyPIClient(settings(http_timeout_s=0.5), cache) as impatient,
        pytest.raises(TransientError, match="still incomplete"),
    ):
        impatient.newest_release(server.index, "tool", prereleases=False)
    assert time.monotonic() - started < 3.0  # deadline is 3 x 0.5 s


def test_headers_that_never_come(server: PyPIServer, cache: redis.Redis) -> None:
    server.set_releases("tool", ["1.0.0"])
    server.set_response("tool", body=b"{}", delay_s=5)
    started = time.monotonic()
    with (
        PyPIClient(settings(http_timeout_s=0.3), cache) as impatient,
        pytest.raises(TransientError, match="unreachable") as caught,
    ):
        impatient.newest_release(server.index, "tool", prereleases=False)
    assert time.monotonic() - started < 2.0
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_server_error_after_retries(server: PyPIServer, cache: redis.Redis) -> None:
    server.set_response("tool", status=500, body=b"oops", content_type="text/plain")
    with (
        PyPIClient(settings(http_retries=2), cache) as patient,
        pytest.raises(TransientError, match="answered 500"),
    ):
        patient.newest_release(server.index, "tool", prereleases=False)
    assert statuses(server) == [500, 500, 500]


def test_unreachable_index(cache: redis.Redis, client: PyPIClient) -> None:
    with PyPIServer() as gone:
        index = gone.index
    with pytest.raises(TransientError, match="unreachable") as caught:
        client.newest_release(index, "tool", prereleases=False)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_redirect_loop(server: PyPIServer, client: PyPIClient) -> None:
    server.set_response("tool", redirect_loop=True)
    with pytest.raises(UpstreamError, match="redirects in a loop") as caught:
        client.newest_release(server.index, "tool", prereleases=False)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert set(statuses(server)) == {302} and len(server.requests) == 6


def test_only_yanked_releases(server: PyPIServer, client: PyPIClient) -> None:
    server.set_releases("tool", ["1.0.0", "1.1.0"], yanked=["1.0.0", "1.1.0"])
    for _ in range(2):  # the second answer comes from the cache, same error
        with pytest.raises(UpstreamError, match="2 yanked"):
            client.newest_release(server.index, "tool", prereleases=True)
    assert statuses(server) == [200, 304]


def test_credentials_in_index_never_shown(server: PyPIServer, client: PyPIClient) -> None:
    index = server.index.replace("http://", "http://reader:s3cret@")
    with pytest.raises(UpstreamError) as caught:
        client.newest_release(index, "absent", prereleases=False)
    assert "s3cret" not in str(caught.value) and "reader" not in str(caught.value)


@pytest.mark.parametrize("project", ["../admin", "a b", "", "x" * 200])
def test_invalid_project_sends_nothing(
    server: PyPIServer, client: PyPIClient, project: str
) -> None:
    with pytest.raises(InvalidInput):
        client.newest_release(server.index, project, prereleases=False)
    assert server.requests == []


@pytest.mark.timeout(120)
def test_real_pypi_awscli(cache: redis.Redis) -> None:
    key = f"{HTTP_CACHE_PREFIX}{REAL_PYPI}/awscli/json"
    cache.delete(key)
    try:
        with PyPIClient(settings(http_timeout_s=20, http_retries=2), cache) as real:
            newest = real.newest_release(REAL_PYPI, "awscli", prereleases=False)
    finally:
        cache.delete(key)
    parsed = Version(newest)
    assert str(parsed) == newest
    assert not parsed.is_prerelease and not parsed.is_devrelease and not parsed.local
    assert parsed >= Version("1.46.3")
