"""Each fault module gets its own throw-away Redis (append-only), so two sessions of the suite on
one machine (or any other suite) never share an event log, a broker or a flush."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.throwaway import RedisServer


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
