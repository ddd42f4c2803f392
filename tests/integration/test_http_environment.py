"""The HTTP session honours the environment's proxy settings for every request, per origin,
though it reads them once per origin (shared/adapters/http.py): a real local server, a proxy address
where nothing listens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from shared.adapters.http import make_session
from shared.config import Settings
from shared.testing.pypi_server import PyPIServer

pytestmark = pytest.mark.timeout(30)

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, a proxied request fails


@pytest.fixture
def pypi() -> Iterator[PyPIServer]:
    with PyPIServer() as running:
        running.set_releases("tool", ["1.0.0"])
        yield running


def test_no_proxy_origins_go_direct_and_the_others_through_the_proxy_every_time(
    pypi: PyPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", NOWHERE)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    session = make_session(Settings(http_retries=0, http_timeout_s=5))
    direct = pypi.index + "/tool/json"
    proxied = direct.replace("127.0.0.1", "localhost")  # the same server, not in NO_PROXY
    for _ in range(2):  # the second time from what the session kept of the environment
        assert session.get(direct, timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.ProxyError):
            session.get(proxied, timeout=5)
    assert len(pypi.requests) == 2
    session.close()
