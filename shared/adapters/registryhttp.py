"""Registry HTTP calls with their authentication: one call to the distribution API, answered
after a 401 challenge with the Basic or bearer-token flow (Docker Hub, GHCR, `distribution`),
and its status mapped to freshen's errors. shared/adapters/registry.py says what the calls are for.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.utils import parse_dict_header
from urllib3.exceptions import HTTPError

from shared.adapters.http import make_session, read_body
from shared.config import Settings
from shared.constants import MANIFEST_ACCEPT
from shared.errors import TransientError, UpstreamError
from shared.model import validate

_ACCEPT = ", ".join(MANIFEST_ACCEPT)
# Rate-limit headers of Docker Hub (`ratelimit-remaining: 0;w=21600`) and others.
_RATE_LIMIT_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining")
_CREDENTIALS_HINT = "set FRESHEN_REGISTRY_USERNAME and FRESHEN_REGISTRY_PASSWORD"
# A token answer is a few kilobytes: a hostile token service gets no more than this into memory.
TOKEN_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Target:
    """The validated subject of one registry call; its str() is what error messages quote."""

    registry: str
    repository: str
    reference: str

    @classmethod
    def of(cls, registry: str, repository: str, reference: str) -> Target:
        checked = validate.digest(reference) if ":" in reference else validate.tag(reference)
        return cls(validate.registry_host(registry), validate.repository(repository), checked)

    @property
    def is_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    def __str__(self) -> str:
        separator = "@" if self.is_digest else ":"
        return f"{self.registry}/{self.repository}{separator}{self.reference}"


class Transport:
    """Sends registry calls; keeps the Authorization value per (registry, scope), never shown."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._own_session = session is None
        self._session = make_session(settings) if session is None else session
        self._auth: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        """Close the HTTP session if this transport created it."""
        if self._own_session:
            self._session.close()

    def send(
        self,
        method: str,
        target: Target,
        path: str,
        actions: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        tolerate: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """One API call: cached auth first, one retry after a 401 challenge, then status checks."""
        scheme = "http" if target.registry in self._settings.insecure_registries else "https"
        url = f"{scheme}://{target.registry}/v2/{target.repository}/{path}"
        headers = {"Accept": _ACCEPT, **(headers or {})}
        scope = f"repository:{target.repository}:{actions}"
        key = (target.registry, scope)
        response = self._http(method, url, target, _with_auth(headers, self._auth.get(key)), data)
        if response.status_code == 401:
            response.close()
            challenge = response.headers.get("WWW-Authenticate", "")
            authorization = self._authorize(challenge, target, scope)
            if authorization is not None:
                self._auth[key] = authorization
                response = self._http(method, url, target, _with_auth(headers, authorization), data)
        if response.status_code not in tolerate:
            self._raise_for_status(response, target)
        return response

    def _http(
        self,
        method: str,
        url: str,
        target: Target,
        headers: dict[str, str],
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        timeout = self._settings.http_timeout_s
        try:
            return self._session.request(
                method, url, params, data, headers, timeout=timeout, stream=True
            )
        except requests.RequestException as exc:
            # `from None`: a requests exception carries the request, its headers included.
            host = urlsplit(url).hostname
            raise TransientError(
                f"{target}: request to {host} failed ({type(exc).__name__}); retry later"
            ) from None

    def _authorize(self, challenge: str, target: Target, scope: str) -> str | None:
        """The Authorization value that answers a 401 challenge, or None when there is none."""
        scheme, _, params = challenge.strip().partition(" ")
        fields: dict[str, str | None] = parse_dict_header(params)  # type: ignore[no-untyped-call]
        credentials = self._credentials(target.registry)
        if scheme.lower() == "bearer" and fields.get("realm"):
            return "Bearer " + self._fetch_token(fields, target, scope, credentials)
        if scheme.lower() == "basic" and credentials is not None:
            return _basic(*credentials)
        return None

    def _fetch_token(
        self,
        challenge: dict[str, str | None],
        target: Target,
        scope: str,
        credentials: tuple[str, str] | None,
    ) -> str:
        realm = challenge.get("realm") or ""
        insecure_ok = target.registry in self._settings.insecure_registries
        if not (realm.startswith("https://") or (insecure_ok and realm.startswith("http://"))):
            raise UpstreamError(f"{target}: token realm is not an https URL: {realm[:80]!r}")
        realm_host = urlsplit(realm).netloc.rsplit("@", 1)[-1]
        trusted = (target.registry, *self._settings.token_realm_hosts)
        if realm_host not in trusted and urlsplit(realm).hostname not in trusted:
            raise UpstreamError(
                f"{target}: token realm host {realm_host[:80]!r} is not the registry's own; "
                "add it to FRESHEN_TOKEN_REALM_HOSTS if it is the registry's token service"
            )
        params = {"scope": challenge.get("scope") or scope}
        if challenge.get("service"):
            params["service"] = str(challenge["service"])
        headers = {} if credentials is None else {"Authorization": _basic(*credentials)}
        response = self._http("GET", realm, target, headers, params=params)
        self._raise_for_status(response, target)
        payload = json_object(self.read(response, target, TOKEN_MAX_BYTES), target)
        token = payload.get("token") or payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"{target}: token service of {target.registry} sent no token")
        return token

    def _credentials(self, registry: str) -> tuple[str, str] | None:
        """Username and password, only ever for the push registry."""
        username, password = self._settings.registry_username, self._settings.registry_password
        if registry != self._settings.push_registry or not username or password is None:
            return None
        return username, password.get_secret_value()

    def read(self, response: requests.Response, target: Target, limit: int | None = None) -> bytes:
        cap = min(limit or self._settings.max_response_bytes, self._settings.max_response_bytes)
        return read_body(response, cap, self._settings.http_timeout_s, str(target))

    def _raise_for_status(self, response: requests.Response, target: Target) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        code = _error_code(response) if 400 <= status < 500 else ""
        response.close()
        if status == 429 or status >= 500 or _rate_limited(response):
            raise TransientError(f"{target}: registry answered HTTP {status}{code}; retry later")
        if status in (401, 403):
            push = self._settings.push_registry
            only = "" if target.registry == push else f" (they are sent only to {push})"
            raise UpstreamError(
                f"{target}: registry {target.registry} denied access to {target.repository} "
                f"(HTTP {status}{code}); check the name, or {_CREDENTIALS_HINT}{only}"
            )
        if status == 404:
            raise UpstreamError(f"{target}: not found in registry {target.registry}{code}")
        raise UpstreamError(f"{target}: registry answered HTTP {status}{code}")


def _with_auth(headers: dict[str, str], authorization: str | None) -> dict[str, str]:
    return headers if authorization is None else {**headers, "Authorization": authorization}


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def json_object(body: bytes, target: Target) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise UpstreamError(f"{target}: registry sent malformed JSON") from None
    if not isinstance(value, dict):
        raise UpstreamError(f"{target}: registry sent JSON that is not an object")
    return value


def _rate_limited(response: requests.Response) -> bool:
    remaining = (response.headers.get(name, "") for name in _RATE_LIMIT_HEADERS)
    return any(value.split(";")[0].strip() == "0" for value in remaining)


def _error_code(response: requests.Response) -> str:
    """`, CODE` from the registry's JSON error body (e.g. MANIFEST_BLOB_UNKNOWN), if any."""
    try:
        errors = json.loads(response.raw.read(4096, decode_content=True)).get("errors")
        code = errors[0]["code"]
    except (ValueError, AttributeError, LookupError, TypeError, OSError, HTTPError):
        return ""
    return f", {code}" if isinstance(code, str) and code.isidentifier() and len(code) < 64 else ""
