"""Release payloads shaped like PyPI's JSON API (`<index>/<project>/json`), for the PyPI
stand-in (shared/testing/pypi_server.py) and tests that serve a payload raw or spoiled."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from packaging.version import InvalidVersion, Version

# Where file URLs in generated payloads point; never fetched.
FILES_HOST = "https://files.example.invalid"


def release_payload(
    project: str,
    versions: list[str],
    yanked: Iterable[str] = (),
    uploaded_at: Mapping[str, datetime | None] | None = None,
) -> bytes:
    """A payload shaped like PyPI's: one sdist per release, oldest first, `info.version` newest.

    Release i was uploaded on 2020-01-01 plus i days, unless `uploaded_at` gives its time (None:
    the file carries no upload time, as a malformed index might send).
    """
    yanked_set = set(yanked)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    releases = {}
    for i, raw in enumerate(versions):
        when = (uploaded_at or {}).get(raw, start + timedelta(days=i))
        uploaded = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if when else None
        filename = f"{project}-{raw}.tar.gz"
        releases[raw] = [
            {
                "filename": filename,
                "url": f"{FILES_HOST}/packages/source/{project[0]}/{project}/{filename}",
                "packagetype": "sdist",
                "size": 1000 + i,
                "digests": {"sha256": hashlib.sha256(filename.encode()).hexdigest()},
                "requires_python": ">=3.8",
                "upload_time_iso_8601": uploaded,
                "yanked": raw in yanked_set,
                "yanked_reason": "broken" if raw in yanked_set else None,
            }
        ]
    newest = _newest(v for v in versions if v not in yanked_set) or _newest(versions)
    info = {"name": project, "version": newest, "summary": f"{project} (test double)"}
    urls = releases.get(newest, []) if newest else []
    payload = {"info": info, "last_serial": len(versions), "releases": releases, "urls": urls}
    return json.dumps(payload).encode()


def _newest(versions: Iterable[str]) -> str | None:
    parsed = []
    for raw in versions:
        try:
            parsed.append((Version(raw), raw))
        except InvalidVersion:
            continue
    return max(parsed)[1] if parsed else None
