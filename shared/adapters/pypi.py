"""The only module that speaks the PyPI JSON API: a project's newest release, cached by ETag.

An unchanged project costs one conditional GET answered with 304: the cache keeps the ETag and the
two answers (the newest finals, the newest including pre-releases, each with its upload time for
the release-age gate), never the multi-megabyte body.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
from packaging.version import Version
from redis.typing import EncodableT, FieldT

from shared.adapters.http import finish, make_session, read_body
from shared.adapters.pypiselect import Releases, checked_releases, malformed, qualified, quote
from shared.adapters.pypiselect import select_newest as select_newest  # re-exported
from shared.config import Settings
from shared.constants import HTTP_CACHE_PREFIX
from shared.errors import FreshenError, InvalidInput, TransientError, UpstreamError
from shared.model import releaseage, validate
from shared.model.releaseage import Offer, Offered

# Bump when the selection rules change, so answers cached under the old rules are ignored.
CACHE_SCHEMA = "2"
# Cached answers expire even while upstream keeps answering 304, bounding any stale entry.
CACHE_TTL_S = 7 * 24 * 3600
# A body must be complete within this many per-request timeouts (defeats slow drips).
BODY_DEADLINE_FACTOR = 3
# Longest ETag kept; anything longer is not worth a cache entry.
MAX_ETAG_CHARS = 256
# Newest qualifying releases kept per answer with their upload times; a release-age gate that
# needs an older one than these sends the next request unconditionally (still one request).
CACHED_RELEASES = 64


@dataclass(frozen=True)
class _Answers:
    """Both selections for one payload: the qualifying releases newest first (cut to
    CACHED_RELEASES when stored, `*_more` set when some were cut), or the error saying why none."""

    etag: str
    final: tuple[Offered, ...]
    final_error: str
    any: tuple[Offered, ...]
    any_error: str
    final_more: bool = False
    any_more: bool = False

    @classmethod
    def of(cls, releases: Releases, project: str, etag: str) -> _Answers:
        outcomes: list[tuple[tuple[Offered, ...], str]] = []
        for prereleases in (False, True):
            try:
                outcomes.append((tuple(qualified(releases, project, prereleases)), ""))
            except UpstreamError as exc:
                outcomes.append(((), str(exc)))
        (final, final_error), (any_, any_error) = outcomes
        return cls(etag, final, final_error, any_, any_error)

    @classmethod
    def load(cls, fields: dict[str, str]) -> _Answers:
        lists = [tuple(releaseage.decode(fields.get(name, ""))) for name in ("final", "any")]
        errors = [fields.get(f"{name}_error", "") for name in ("final", "any")]
        more = [bool(fields.get(f"{name}_more")) for name in ("final", "any")]
        return cls(fields["etag"], lists[0], errors[0], lists[1], errors[1], more[0], more[1])

    def fields(self) -> dict[FieldT, EncodableT]:
        out: dict[FieldT, EncodableT] = {"schema": CACHE_SCHEMA, "etag": self.etag}
        for name in ("final", "any"):
            kept: tuple[Offered, ...] = getattr(self, name)
            cut = len(kept) > CACHED_RELEASES or bool(getattr(self, f"{name}_more"))
            out[name] = releaseage.encode(kept[:CACHED_RELEASES])
            out[f"{name}_error"] = str(getattr(self, f"{name}_error"))
            out[f"{name}_more"] = "1" if cut else ""
        return out

    def offer(
        self, prereleases: bool, min_age_s: float, now_s: float, project: str
    ) -> Offer | None:
        """The offer (see releaseage.pick); None when the kept releases cannot decide it."""
        entries, error, more = (
            (self.any, self.any_error, self.any_more)
            if prereleases
            else (self.final, self.final_error, self.final_more)
        )
        if not entries:
            raise UpstreamError(error or "no usable release (cached)")
        offer = releaseage.pick(entries, min_age_s, now_s, not more, project)
        if offer is not None:
            for version in (offer.candidate, offer.waiting.version if offer.waiting else ""):
                if version:
                    validate.version(version)  # the cache lives outside this process: re-check
        return offer

    def decides(self, prereleases: bool, min_age_s: float, now_s: float, project: str) -> bool:
        """Whether this answer decides the offer (an error decides it too)."""
        try:
            return self.offer(prereleases, min_age_s, now_s, project) is not None
        except FreshenError:
            return True

    def uploaded(self, version: Version) -> int | None:
        """The kept upload time of `version` (None when not kept)."""
        for kept in (*self.final, *self.any):
            with contextlib.suppress(InvalidInput):
                if validate.version(kept.version) == version:
                    return kept.uploaded_s
        return None


def _split_index(index: str) -> tuple[str, str]:
    """(URL to request, same URL without credentials for keys and messages)."""
    parts = urlsplit(index.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidInput(f"invalid PyPI index URL: {quote(index)}")
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
        """Newest qualifying version of `project` on `index`, whatever its age (see
        select_newest)."""
        return self.offer(index, project, prereleases).candidate

    def offer(
        self,
        index: str,
        project: str,
        prereleases: bool,
        min_age_s: float = 0,
        now_s: float | None = None,
    ) -> Offer:
        """The newest qualifying release at least `min_age_s` old at `now_s` (default: now), and
        the newest one when it is younger (releaseage.pick). One request: conditional, unless
        the cached answer cannot decide (every kept release too young)."""
        now_s = time.time() if now_s is None else now_s
        project, url, shown, key = _where(index, project)
        cached = self._load(key)
        if cached is not None and not cached.decides(prereleases, min_age_s, now_s, project):
            cached = None
        response = self._get(url, shown, project, cached.etag if cached else None)
        if response.status_code == 304:
            finish(response)
            if cached is None:
                raise UpstreamError(f"PyPI project {project}: {shown} answered 304 unasked")
            answers = cached
        else:
            answers = self._fetched(response, key, shown, project)[0]
        offer = answers.offer(prereleases, min_age_s, now_s, project)
        assert offer is not None  # a fresh answer is complete; a cached one was checked
        return offer

    def uploaded(self, index: str, project: str, version: str) -> int:
        """Upload time (POSIX seconds) of release `version`: from the cache when it keeps it
        (an upload time never changes), else from one unconditional request."""
        wanted = validate.version(version)
        project, url, shown, key = _where(index, project)
        cached = self._load(key)
        known = cached.uploaded(wanted) if cached else None
        if known is not None:
            return known
        response = self._get(url, shown, project, None)
        if response.status_code == 304:
            finish(response)
            raise UpstreamError(f"PyPI project {project}: {shown} answered 304 unasked")
        for raw, files in self._fetched(response, key, shown, project)[1].items():
            try:
                same = validate.version(raw) == wanted
            except InvalidInput:
                continue
            if same:
                found = releaseage.upload_time(files)
                if found is None:
                    raise malformed(project, f"release {wanted} has no upload time")
                return found
        raise UpstreamError(f"PyPI project {project} has no release {wanted} at {shown}")

    def _fetched(
        self, response: requests.Response, key: str, shown: str, project: str
    ) -> tuple[_Answers, Releases]:
        """Decode a 200 answer and cache what it says."""
        releases = checked_releases(self._decode(response, shown, project), project)
        answers = _Answers.of(releases, project, _usable_etag(response))
        self._store(key, answers)
        return answers, releases

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
            raise malformed(project, f"{shown} sent content type {quote(media)}, not JSON")
        body = read_body(
            response,
            self._settings.max_response_bytes,
            deadline_s=BODY_DEADLINE_FACTOR * self._settings.http_timeout_s,
            what=f"PyPI project {project}: {shown}",
        )
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise malformed(project, f"{shown} sent a body that is not valid JSON") from None

    def _load(self, key: str) -> _Answers | None:
        raw = self._cache.hgetall(key)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if fields.get("schema") != CACHE_SCHEMA or not fields.get("etag"):
            return None
        return _Answers.load(fields)

    def _store(self, key: str, answers: _Answers) -> None:
        with self._cache.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if answers.etag:
                pipe.hset(key, mapping=answers.fields())
                pipe.expire(key, CACHE_TTL_S)
            pipe.execute()


def _where(index: str, project: str) -> tuple[str, str, str, str]:
    """(project, URL to request, URL shown in messages, cache key)."""
    project = validate.pypi_project(project)
    base, shown_base = _split_index(index)
    shown = f"{shown_base}/{project}/json"
    return project, f"{base}/{project}/json", shown, HTTP_CACHE_PREFIX + shown


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
