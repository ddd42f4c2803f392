"""VulnerabilityIndex against real PyPI (a release with published vulnerabilities) and against the
local PyPI double: data, no data, and data that cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.adapters.vulnindex import VulnerabilityIndex
from shared.config import Settings
from shared.errors import TransientError
from shared.model.vulns import Installed
from shared.testing.pypi_server import PyPIServer

pytestmark = pytest.mark.timeout(60)

REAL_PYPI = "https://pypi.org/pypi"
# Text of one of PyPI's real entries, as served for a release.
ENTRY = {
    "id": "PYSEC-2019-133",
    "aliases": ["CVE-2019-11324", "GHSA-mh33-7rrq-662w"],
    "details": "The urllib3 library before 1.24.2 mishandles certain cases where the desired set "
    "of CA certificates is different from the OS store of CA certificates.",
    "fixed_in": ["1.24.2"],
    "link": "https://osv.dev/vulnerability/PYSEC-2019-133",
    "source": "osv",
    "summary": None,
    "withdrawn": None,
}


def index(url: str, **overrides: Any) -> VulnerabilityIndex:
    values = {"http_timeout_s": 2.0, "http_retries": 1, **overrides}
    return VulnerabilityIndex(Settings(vulnerability_index=url, **values))


@pytest.fixture
def pypi() -> Iterator[PyPIServer]:
    with PyPIServer() as server:
        yield server


def test_real_pypi_reports_the_published_vulnerabilities_of_pycrypto_2_6_1() -> None:
    """pycrypto 2.6.1 (its last release) carries PYSEC-2017-94 (CVE-2013-7459) on PyPI, with
    no fixed version. (From this machine pypi.org answers one release's JSON with 404 and the
    project's JSON with 200: the project's answer serves a release that is its newest.)"""
    found = index(REAL_PYPI, http_timeout_s=10.0).lookup("pycrypto", "2.6.1")
    assert found is not None
    by_id = {a.id: a for a in found}
    assert "CVE-2013-7459" in by_id["PYSEC-2017-94"].aliases
    assert by_id["PYSEC-2017-94"].fixed_in == ()
    assert by_id["PYSEC-2017-94"].link.startswith("https://")


def test_a_served_vulnerability_no_data_and_the_project_answer(pypi: PyPIServer) -> None:
    pypi.set_vulnerabilities("urllib3", "1.24.1", [ENTRY])
    pypi.set_vulnerabilities("six", "1.16.0", [])
    pypi.set_releases("tool", ["0.9", "1.0"])  # a project answer without vulnerability data
    packages = [Installed(n, v, "/x") for n, v in [("urllib3", "1.24.1"), ("six", "1.16.0")]]
    packages += [Installed("tool", "1.0", "/y"), Installed("local-only", "0.1", "/z")]
    lookups = index(pypi.index).lookup_all(packages)
    urllib3, six, tool, local = (lookup.advisories for lookup in lookups)
    assert urllib3 is not None and urllib3[0].id == "PYSEC-2019-133"
    assert urllib3[0].fixed_in == ("1.24.2",) and urllib3[0].summary.startswith("The urllib3")
    assert six == () and tool is None and local is None
    paths = [path for _, path, _, _ in pypi.requests]
    assert "/pypi/urllib3/1.24.1/json" in paths and "/pypi/local-only/json" in paths


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, b"down", "HTTP 503"),
        (200, b"<html>", "not JSON"),
        (200, b'{"vulnerabilities": [{"aliases": []}]}', "has no id"),
    ],
)
def test_data_that_cannot_be_read_is_a_transient_error(
    pypi: PyPIServer, status: int, body: bytes, error: str
) -> None:
    pypi.set_release_response("urllib3", "1.24.1", status=status, body=body)
    with pytest.raises(TransientError, match=f"urllib3 1.24.1.*could not be read.*{error}"):
        index(pypi.index).lookup("urllib3", "1.24.1")
    asked = [p for _, p, _, _ in pypi.requests if p == "/pypi/urllib3/1.24.1/json"]
    assert len(asked) == (2 if status == 503 else 1)  # a 5xx is retried (FRESHEN_HTTP_RETRIES)


def test_an_unreachable_index_is_a_transient_error() -> None:
    with pytest.raises(TransientError, match="could not be read: ConnectionError"):
        index("http://127.0.0.1:9", http_retries=0).lookup("six", "1.16.0")
