"""The only module that reads vulnerability data: PyPI's JSON API per release
(`<index>/<name>/<version>/json`, its `vulnerabilities` list, as pip-audit's PyPI service reads
it), through the project's HTTP session (retries, deadlines, size caps).

pip-audit's library is not used: its PyPI service builds the URL from a fixed https://pypi.org
and its own session, so it can be pointed neither at another index nor through freshen's caps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests

from shared.adapters.http import make_session, read_body
from shared.config import Settings
from shared.errors import TransientError
from shared.model.vulns import Advisory, Installed, Lookup, advisories

# A body must be complete within this many per-request timeouts (defeats slow drips).
BODY_DEADLINE_FACTOR = 3
# Lookups in flight at once (an image holds tens of distributions; the index answers each in
# about 0.1 s); below the session's ten pooled connections per host.
LOOKUPS_IN_FLIGHT = 8


class VulnerabilityIndex:
    """Looks installed distributions up; build one per worker process and pass it in."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._index = settings.vulnerability_index
        self._session = session or make_session(settings)

    def lookup_all(self, packages: Sequence[Installed]) -> list[Lookup]:
        """Each distribution's advisories, LOOKUPS_IN_FLIGHT at a time; TransientError when the
        data cannot be read (the index unreachable or failing), so the stage retries like any
        transient error: the first one stops the lookups not yet begun."""
        if not packages:
            return []
        workers = min(LOOKUPS_IN_FLIGHT, len(packages))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="vulnerability-lookup")
        try:
            found = pool.map(lambda p: self.lookup(p.name, p.version), packages)
            return [Lookup(p, a) for p, a in zip(packages, found, strict=True)]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def lookup(self, name: str, version: str) -> tuple[Advisory, ...] | None:
        """The release's advisories; None when the index has no data for it (404). A release
        that is its project's newest is also found in the project's answer (`info.version`),
        which serves indexes that only answer per project."""
        what = f"vulnerability data for {name} {version}"
        found = self._get(f"{quote(name, safe='')}/{quote(version, safe='')}/json", name, version)
        if found is not None:
            return self._advisories(found, what)
        project = self._get(f"{quote(name, safe='')}/json", name, version)
        info = project.get("info") if isinstance(project, dict) else None
        if isinstance(info, dict) and info.get("version") == version:
            return self._advisories(project, what)
        return None

    def _get(self, path: str, name: str, version: str) -> object | None:
        """The JSON at `<index>/<path>`, or None on 404."""
        url = f"{self._index}/{path}"
        what = f"vulnerability data for {name} {version} ({url})"
        timeout = self._settings.http_timeout_s
        try:
            response = self._session.get(url, timeout=timeout, stream=True)
        except requests.RequestException as exc:
            raise TransientError(f"{what} could not be read: {type(exc).__name__}") from None
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:  # 5xx, 429 (already retried) or anything unexpected
            response.close()
            raise TransientError(f"{what} could not be read: HTTP {response.status_code}")
        body = read_body(
            response, self._settings.max_response_bytes, timeout * BODY_DEADLINE_FACTOR, what
        )
        try:
            payload: object = json.loads(body)
        except ValueError:
            raise TransientError(f"{what} could not be read: not JSON") from None
        return payload

    @staticmethod
    def _advisories(payload: object, what: str) -> tuple[Advisory, ...] | None:
        """The answer's advisories; None when it carries no vulnerability data at all (an index
        that does not publish it, such as a plain mirror)."""
        if isinstance(payload, dict) and "vulnerabilities" not in payload:
            return None
        try:
            return advisories(payload)
        except ValueError as exc:
            raise TransientError(f"{what} could not be read: {exc}") from None
