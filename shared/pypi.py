"""The only module that speaks the PyPI JSON API: a project's newest release, cached by ETag.

An unchanged project costs one conditional GET answered with 304: the cache keeps the ETag and the
two answers (newest final, newest including pre-releases), never the multi-megabyte body.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
from packaging.version import Version
from redis.typing import EncodableT, FieldT

from shared import validate
from shared.config import Settings
from shared.constants import HTTP_CACHE_PREFIX
from shared.errors import InvalidInput, TransientError, UpstreamError
from shared.http import finish, make_session, read_body

# Bump when the selection rules change, so answers cached under the old rules are ignored.
CACHE_SCHEMA = "1"
# Cached answers expire even while upstream keeps answering 304, bounding any stale entry.
CACHE_TTL_S = 7 * 24 * 3600
# A body must be complete within this many per-request timeouts (defeats slow drips).
BODY_DEADLINE_FACTOR = 3
# Longest ETag kept; anything longer is not worth a cache entry.
MAX_ETAG_CHARS = 256
# Rejected raw version strings quoted in an error, and how much of each.
QUOTED_REJECTS = 3
QUOTE_CHARS = 40

log = logging.getLogger(__name__)
NOT_PEP440 = "not PEP 440"
NO_FILES = "without files"
YANKED = "yanked"
PRERELEASE = "pre-release"
# An epoch (`1!2.0`) or a local part (`1.0+ubuntu`) cannot be an OCI tag: such a release is
# skipped (with this reason logged), so it never blocks the releases after it.
UNTAGGABLE = "with an epoch or local part"

Releases = dict[str, list[dict[str, object]]]


def _quote(value: object) -> str:
    """A raw upstream value made safe to show: truncated, then repr() (control chars escaped)."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:QUOTE_CHARS]) + ("…" if len(text) > QUOTE_CHARS else "")


def _malformed(project: str, why: str) -> UpstreamError:
    return UpstreamError(f"PyPI project {project}: malformed answer: {why}")


def _releases(payload: object, project: str) -> Releases:
    """The payload's `releases` mapping, with its shape checked."""
    if not isinstance(payload, dict):
        raise _malformed(project, f"expected a JSON object, got {type(payload).__name__}")
    releases = payload.get("releases")
    if not isinstance(releases, dict):
        raise _malformed(project, "no 'releases' object")
    for raw, files in releases.items():
        if not isinstance(files, list):
            raise _malformed(project, f"release {_quote(raw)} has no file list")
        if not all(isinstance(f, dict) for f in files):
            raise _malformed(project, f"release {_quote(raw)} has a file that is not an object")
    return releases


def _judge(raw: object, files: list[dict[str, object]], prereleases: bool) -> Version | str:
    """The parsed version when the release qualifies, else the reason it does not."""
    try:
        parsed = validate.version(raw)
    except InvalidInput:
        return NOT_PEP440
    if not files:
        return NO_FILES
    if all(f.get("yanked") is True for f in files):
        return YANKED
    if not prereleases and (parsed.is_prerelease or parsed.is_devrelease):
        return PRERELEASE
    if parsed.epoch or parsed.local:
        return UNTAGGABLE
    return parsed


def _select(releases: Releases, project: str, prereleases: bool) -> str:
    qualified: list[Version] = []
    rejected: dict[str, list[str]] = {
        NOT_PEP440: [],
        NO_FILES: [],
        YANKED: [],
        PRERELEASE: [],
        UNTAGGABLE: [],
    }
    for raw, files in releases.items():
        verdict = _judge(raw, files, prereleases)
        if isinstance(verdict, Version):
            qualified.append(verdict)
        else:
            rejected[verdict].append(raw)
    if qualified:
        if rejected[UNTAGGABLE]:
            log.info(
                "PyPI project %s: skipped %s: an epoch or local part cannot be an OCI tag",
                project, ", ".join(_quote(raw) for raw in rejected[UNTAGGABLE][:QUOTED_REJECTS]),
            )  # fmt: skip
        return str(max(qualified))
    if not releases:
        raise UpstreamError(f"PyPI project {project} lists no releases; check the project name")
    counts = ", ".join(f"{len(raws)} {reason}" for reason, raws in rejected.items() if raws)
    examples = [raw for raws in rejected.values() for raw in raws][:QUOTED_REJECTS]
    hint = "" if prereleases else "; allow pre-releases if they are wanted"
    raise UpstreamError(
        f"PyPI project {project} has no usable release among {len(releases)} ({counts}; "
        f"e.g. {', '.join(_quote(raw) for raw in examples)}){hint}"
    )


def select_newest(payload: object, project: str, prereleases: bool) -> str:
    """Normalized newest PEP 440 version with files, not yanked, final unless `prereleases`.

    `payload` is the decoded JSON of `<index>/<project>/json`. Raises UpstreamError when it is
    malformed or when no release qualifies; never returns a raw string that did not validate.
    """
    project = validate.pypi_project(project)
    return _select(_releases(payload, project), project, prereleases)


@dataclass(frozen=True)
class _Answers:
    """Both selections for one payload: a version, or the error message explaining why none."""

    etag: str
    final: str
    final_error: str
    any: str
    any_error: str

    @classmethod
    def of(cls, releases: Releases, project: str, etag: str) -> _Answers:
        outcomes: list[tuple[str, str]] = []
        for prereleases in (False, True):
            try:
                outcomes.append((_select(releases, project, prereleases), ""))
            except UpstreamError as exc:
                outcomes.append(("", str(exc)))
        (final, final_error), (any_, any_error) = outcomes
        return cls(etag, final, final_error, any_, any_error)

    def fields(self) -> dict[FieldT, EncodableT]:
        names = ("etag", "final", "final_error", "any", "any_error")
        return {"schema": CACHE_SCHEMA, **{name: str(getattr(self, name)) for name in names}}

    def answer(self, prereleases: bool) -> str:
        version = self.any if prereleases else self.final
        error = self.any_error if prereleases else self.final_error
        if not version:
            raise UpstreamError(error or "no usable release (cached)")
        return str(validate.version(version))  # the cache lives outside this process: re-check


def _split_index(index: str) -> tuple[str, str]:
    """(URL to request, same URL without credentials for keys and messages)."""
    parts = urlsplit(index.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidInput(f"invalid PyPI index URL: {_quote(index)}")
    shown_host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return parts.geturl(), urlunsplit(parts._replace(netloc=shown_host))


class PyPIClient:
    """Asks a PyPI-compatible JSON API for a project's newest release; built once per worker."""

    def __init__(
        self, settings: Settings, cache: redis.Redis, session: requests.Session | None = None
    ) -> None:
        self._settings = settings
        self._cache = cache
        self._owns_session = session is None
        self._session = make_session(settings) if session is None else session

    def close(self) -> None:
        """Close the HTTP session if this client made it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> PyPIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def newest_release(self, index: str, project: str, prereleases: bool) -> str:
        """Newest qualifying version of `project` on `index` (see select_newest)."""
        project = validate.pypi_project(project)
        base, shown_base = _split_index(index)
        url, shown = f"{base}/{project}/json", f"{shown_base}/{project}/json"
        key = HTTP_CACHE_PREFIX + shown
        cached = self._load(key)
        response = self._get(url, shown, project, cached.etag if cached else None)
        if response.status_code == 304:
            finish(response)
            if cached is None:
                raise UpstreamError(f"PyPI project {project}: {shown} answered 304 unasked")
            return cached.answer(prereleases)
        releases = _releases(self._decode(response, shown, project), project)
        answers = _Answers.of(releases, project, _usable_etag(response))
        self._store(key, answers)
        return answers.answer(prereleases)

    def _get(self, url: str, shown: str, project: str, etag: str | None) -> requests.Response:
        headers = {"Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        where = f"PyPI project {project}: {shown}"
        try:
            response = self._session.get(
                url, headers=headers, stream=True, timeout=self._settings.http_timeout_s
            )
        except requests.TooManyRedirects:
            raise UpstreamError(f"{where} redirects in a loop; check the index URL") from None
        except requests.exceptions.SSLError:
            raise UpstreamError(f"{where}: TLS verification failed; check the CA bundle") from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError) as exc:
            raise TransientError(f"{where} unreachable ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise UpstreamError(f"{where}: request failed ({type(exc).__name__})") from None
        _check_status(response, shown, project)
        return response

    def _decode(self, response: requests.Response, shown: str, project: str) -> object:
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            response.close()
            raise _malformed(project, f"{shown} sent content type {_quote(media)}, not JSON")
        body = read_body(
            response,
            self._settings.max_response_bytes,
            deadline_s=BODY_DEADLINE_FACTOR * self._settings.http_timeout_s,
            what=f"PyPI project {project}: {shown}",
        )
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise _malformed(project, f"{shown} sent a body that is not valid JSON") from None

    def _load(self, key: str) -> _Answers | None:
        raw = self._cache.hgetall(key)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if fields.get("schema") != CACHE_SCHEMA or not fields.get("etag"):
            return None
        names = ("final", "final_error", "any", "any_error")
        return _Answers(fields["etag"], *(fields.get(name, "") for name in names))

    def _store(self, key: str, answers: _Answers) -> None:
        with self._cache.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if answers.etag:
                pipe.hset(key, mapping=answers.fields())
                pipe.expire(key, CACHE_TTL_S)
            pipe.execute()


def _check_status(response: requests.Response, shown: str, project: str) -> None:
    status = response.status_code
    if status in (200, 304):
        return
    response.close()
    if status == 404:
        raise UpstreamError(f"PyPI project {project} not found at {shown}; check the project name")
    if status == 429 or status >= 500:
        raise TransientError(f"PyPI project {project}: {shown} answered {status}; retry later")
    raise UpstreamError(f"PyPI project {project}: {shown} answered HTTP {status}")


def _usable_etag(response: requests.Response) -> str:
    """The response's ETag when it can be sent back as-is; '' when absent or unreasonable."""
    etag = response.headers.get("ETag", "")
    return etag if len(etag) <= MAX_ETAG_CHARS and etag.isascii() and etag.isprintable() else ""


def _text(value: bytes | str) -> str:
    """Redis answers bytes or str depending on how the client was built."""
    return value.decode() if isinstance(value, bytes) else value
