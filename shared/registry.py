"""The OCI registry client: manifest digests, manifest copies between tags, image config blobs.

The only module that speaks the distribution HTTP API. Tags are moved by copying manifest
bytes (GET by digest, PUT by tag), so a promoted tag has exactly the tested digest and no layer
is pulled or pushed. Auth follows the token flow Docker Hub, GHCR and `distribution` use.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.utils import parse_dict_header
from urllib3.exceptions import HTTPError

from shared import validate
from shared.config import Settings
from shared.constants import MANIFEST_ACCEPT
from shared.errors import InvalidInput, TransientError, UpstreamError
from shared.http import finish, make_session, read_body
from shared.reference import ImageRef

_ACCEPT = ", ".join(MANIFEST_ACCEPT)
# Index / manifest-list types: they name per-platform manifests and have no config blob.
_INDEX_TYPES = frozenset(MANIFEST_ACCEPT[:2])
# Rate-limit headers of Docker Hub (`ratelimit-remaining: 0;w=21600`) and others.
_RATE_LIMIT_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining")
_CREDENTIALS_HINT = "set FRESHEN_REGISTRY_USERNAME and FRESHEN_REGISTRY_PASSWORD"
# The OCI distribution spec lets registries refuse manifests over 4 MiB; a token answer is a
# few kilobytes. A hostile server gets no more than this into memory.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
TOKEN_MAX_BYTES = 64 * 1024


def sha256_digest(data: bytes) -> str:
    """The OCI content digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry stored it; the digest is that of `body`."""

    media_type: str
    body: bytes = field(repr=False)
    digest: str

    def __post_init__(self) -> None:
        if sha256_digest(self.body) != validate.digest(self.digest):
            raise InvalidInput(f"manifest digest {self.digest} does not match its body")


@dataclass(frozen=True)
class _Target:
    """The validated subject of one registry call; its str() is what error messages quote."""

    registry: str
    repository: str
    reference: str

    @classmethod
    def of(cls, registry: str, repository: str, reference: str) -> _Target:
        checked = validate.digest(reference) if ":" in reference else validate.tag(reference)
        return cls(validate.registry_host(registry), validate.repository(repository), checked)

    @property
    def is_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    def __str__(self) -> str:
        separator = "@" if self.is_digest else ":"
        return f"{self.registry}/{self.repository}{separator}{self.reference}"


class RegistryClient:
    """Speaks to any OCI registry; build one per worker process and pass it in."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._own_session = session is None
        self._session = make_session(settings) if session is None else session
        # Authorization header values per (registry host, scope); never logged or shown.
        self._auth: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self._session.close()

    def head_digest(self, ref: ImageRef) -> str:
        """The digest `ref` resolves to now (index digest for multi-platform images)."""
        target = _Target.of(ref.registry, ref.repository, ref.reference)
        response = self._send("HEAD", target, f"manifests/{target.reference}", "pull")
        finish(response)
        return _reported_digest(response, target)

    def tag_digest(self, registry: str, repository: str, tag: str) -> str | None:
        """The digest `tag` points at, or None when the tag or the repository does not exist."""
        target = _Target.of(registry, repository, validate.tag(tag))
        path = f"manifests/{target.reference}"
        response = self._send("HEAD", target, path, "pull", tolerate=frozenset({404}))
        finish(response)
        return None if response.status_code == 404 else _reported_digest(response, target)

    def get_manifest(self, registry: str, repository: str, reference: str) -> Manifest:
        """The manifest under a tag or digest, with its exact bytes, checked against its digest."""
        target = _Target.of(registry, repository, reference)
        response = self._send("GET", target, f"manifests/{target.reference}", "pull")
        body = self._read(response, target, MANIFEST_MAX_BYTES)
        manifest = Manifest(_media_type(response, body, target), body, sha256_digest(body))
        reported = response.headers.get("Docker-Content-Digest")
        expected = target.reference if target.is_digest else (reported or "").strip()
        if expected and expected != manifest.digest:
            raise UpstreamError(f"{target}: manifest body has digest {manifest.digest}")
        return manifest

    def put_manifest(self, registry: str, repository: str, tag: str, manifest: Manifest) -> str:
        """Store `manifest` under `tag`; return the digest the registry reports (== its own)."""
        target = _Target.of(registry, repository, validate.tag(tag))
        headers = {"Content-Type": manifest.media_type}
        path = f"manifests/{target.reference}"
        response = self._send("PUT", target, path, "pull,push", headers, manifest.body)
        finish(response)
        # The header is optional for PUT in the OCI spec; the body's digest is then authoritative.
        if "Docker-Content-Digest" not in response.headers:
            return manifest.digest
        reported = _reported_digest(response, target)
        if reported != manifest.digest:
            raise UpstreamError(f"{target}: registry stored {reported}, not {manifest.digest}")
        return reported

    def copy_to_tag(self, registry: str, repository: str, digest: str, tag: str) -> None:
        """Point `tag` at `digest` by copying the manifest bytes; no layer moves."""
        validate.tag(tag)
        manifest = self.get_manifest(registry, repository, validate.digest(digest))
        self.put_manifest(registry, repository, tag, manifest)

    def delete_tag(self, registry: str, repository: str, tag: str, digest: str) -> bool:
        """Remove `tag` if it still points at `digest`; False when the registry cannot delete a
        tag alone (OCI 1.1 allows it; distribution 2.x answers 400 or 405) or it moved on."""
        if self.tag_digest(registry, repository, tag) != validate.digest(digest):
            return False
        target = _Target.of(registry, repository, validate.tag(tag))
        unsupported = frozenset({400, 405})
        path = f"manifests/{target.reference}"
        response = self._send("DELETE", target, path, "delete", tolerate=unsupported | {404})
        finish(response)
        return response.status_code in (200, 202)

    def delete_manifest(self, registry: str, repository: str, digest: str) -> bool:
        """Delete the manifest `digest` and every tag on it; False when deletes are disabled."""
        target = _Target.of(registry, repository, validate.digest(digest))
        path = f"manifests/{target.reference}"
        response = self._send("DELETE", target, path, "delete", tolerate=frozenset({404, 405}))
        finish(response)
        return response.status_code in (200, 202)

    def labels(self, registry: str, repository: str, digest: str) -> dict[str, str]:
        """The image's labels (from its config blob)."""
        config = self.image_config(registry, repository, digest).get("config") or {}
        labels = config.get("Labels") if isinstance(config, dict) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def image_config(self, registry: str, repository: str, digest: str) -> dict[str, Any]:
        """The config blob (labels, env, OS) of a single-platform image manifest."""
        manifest = self.get_manifest(registry, repository, validate.digest(digest))
        source = _Target.of(registry, repository, digest)
        if manifest.media_type in _INDEX_TYPES:
            raise UpstreamError(f"{source}: is a multi-platform index; pass a platform's digest")
        config = _json_object(manifest.body, source).get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(config_digest, str) or not config_digest.startswith("sha256:"):
            raise UpstreamError(f"{source}: manifest names no sha256 config blob")
        target = _Target.of(registry, repository, config_digest)
        body = self._read(self._send("GET", target, f"blobs/{target.reference}", "pull"), target)
        if sha256_digest(body) != target.reference:
            raise UpstreamError(f"{target}: config blob does not match its digest")
        return _json_object(body, target)

    def _send(
        self,
        method: str,
        target: _Target,
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
        target: _Target,
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

    def _authorize(self, challenge: str, target: _Target, scope: str) -> str | None:
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
        target: _Target,
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
        payload = _json_object(self._read(response, target, TOKEN_MAX_BYTES), target)
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

    def _read(
        self, response: requests.Response, target: _Target, limit: int | None = None
    ) -> bytes:
        cap = min(limit or self._settings.max_response_bytes, self._settings.max_response_bytes)
        return read_body(response, cap, self._settings.http_timeout_s, str(target))

    def _raise_for_status(self, response: requests.Response, target: _Target) -> None:
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


def _reported_digest(response: requests.Response, target: _Target) -> str:
    """The Docker-Content-Digest header, validated; for a digest reference, equal to it."""
    value = response.headers.get("Docker-Content-Digest")
    if value is None:
        raise UpstreamError(f"{target}: registry sent no Docker-Content-Digest header")
    try:
        digest = validate.digest(value.strip())
    except InvalidInput:
        raise UpstreamError(f"{target}: registry sent an invalid Docker-Content-Digest") from None
    if target.is_digest and digest != target.reference:
        raise UpstreamError(f"{target}: registry reported a different digest {digest}")
    return digest


def _media_type(response: requests.Response, body: bytes, target: _Target) -> str:
    """The manifest's media type from Content-Type, else from its `mediaType` field."""
    declared = response.headers.get("Content-Type", "").split(";")[0].strip()
    if declared not in MANIFEST_ACCEPT:
        declared = str(_json_object(body, target).get("mediaType", ""))
    if declared not in MANIFEST_ACCEPT:
        raise UpstreamError(f"{target}: unsupported manifest type {declared[:80]!r}")
    return declared


def _json_object(body: bytes, target: _Target) -> dict[str, Any]:
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
