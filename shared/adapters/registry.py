"""The OCI registry client: manifest digests, manifest copies between tags, image config blobs.

With shared/adapters/registryhttp.py (each call and its authentication), the only code that
speaks the distribution HTTP API. Tags are moved by copying manifest bytes (GET by digest, PUT by
tag), so a promoted tag has exactly the tested digest and no layer is pulled or pushed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import requests

from shared.adapters.http import finish
from shared.adapters.registryhttp import TOKEN_MAX_BYTES, Target, Transport, json_object
from shared.config import Settings
from shared.constants import MANIFEST_ACCEPT
from shared.errors import InvalidInput, UpstreamError
from shared.model import validate
from shared.model.reference import ImageRef

__all__ = ["MANIFEST_MAX_BYTES", "TOKEN_MAX_BYTES", "Manifest", "RegistryClient", "sha256_digest"]

# Index / manifest-list types: they name per-platform manifests and have no config blob.
_INDEX_TYPES = frozenset(MANIFEST_ACCEPT[:2])
# The OCI distribution spec lets registries refuse manifests over 4 MiB.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024


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


class RegistryClient:
    """Speaks to any OCI registry; build one per worker process and pass it in."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._http = Transport(settings, session)
        self._send = self._http.send
        self._read = self._http.read

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        self._http.close()

    def head_digest(self, ref: ImageRef) -> str:
        """The digest `ref` resolves to now (index digest for multi-platform images)."""
        target = Target.of(ref.registry, ref.repository, ref.reference)
        response = self._send("HEAD", target, f"manifests/{target.reference}", "pull")
        finish(response)
        return _reported_digest(response, target)

    def tag_digest(self, registry: str, repository: str, tag: str) -> str | None:
        """The digest `tag` points at, or None when the tag or the repository does not exist."""
        target = Target.of(registry, repository, validate.tag(tag))
        path = f"manifests/{target.reference}"
        response = self._send("HEAD", target, path, "pull", tolerate=frozenset({404}))
        finish(response)
        return None if response.status_code == 404 else _reported_digest(response, target)

    def get_manifest(self, registry: str, repository: str, reference: str) -> Manifest:
        """The manifest under a tag or digest, with its exact bytes, checked against its digest."""
        target = Target.of(registry, repository, reference)
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
        target = Target.of(registry, repository, validate.tag(tag))
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
        target = Target.of(registry, repository, validate.tag(tag))
        unsupported = frozenset({400, 405})
        path = f"manifests/{target.reference}"
        response = self._send("DELETE", target, path, "delete", tolerate=unsupported | {404})
        finish(response)
        return response.status_code in (200, 202)

    def delete_manifest(self, registry: str, repository: str, digest: str) -> bool:
        """Delete the manifest `digest` and every tag on it; False when deletes are disabled."""
        target = Target.of(registry, repository, validate.digest(digest))
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
        source = Target.of(registry, repository, digest)
        if manifest.media_type in _INDEX_TYPES:
            raise UpstreamError(f"{source}: is a multi-platform index; pass a platform's digest")
        config = json_object(manifest.body, source).get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(config_digest, str) or not config_digest.startswith("sha256:"):
            raise UpstreamError(f"{source}: manifest names no sha256 config blob")
        target = Target.of(registry, repository, config_digest)
        body = self._read(self._send("GET", target, f"blobs/{target.reference}", "pull"), target)
        if sha256_digest(body) != target.reference:
            raise UpstreamError(f"{target}: config blob does not match its digest")
        return json_object(body, target)


def _reported_digest(response: requests.Response, target: Target) -> str:
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


def _media_type(response: requests.Response, body: bytes, target: Target) -> str:
    """The manifest's media type from Content-Type, else from its `mediaType` field."""
    declared = response.headers.get("Content-Type", "").split(";")[0].strip()
    if declared not in MANIFEST_ACCEPT:
        declared = str(json_object(body, target).get("mediaType", ""))
    if declared not in MANIFEST_ACCEPT:
        raise UpstreamError(f"{target}: unsupported manifest type {declared[:80]!r}")
    return declared
