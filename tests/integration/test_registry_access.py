"""Who may write to the registry scripts/services.sh runs: 127.0.0.1:5000 answers every call
without its credentials (or with wrong ones) with 401 and works with them; 127.0.0.1:5001, the
same storage read-only and anonymous, refuses every write and serves pulls of release tags (and
of what was pushed a moment ago) to anyone, the Docker Engine included.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from urllib.parse import urljoin

import docker
import pytest
import requests
from pydantic import SecretStr

from shared.adapters.registry import RegistryClient
from shared.config import Settings
from tests.conftest import LOCAL_BASE, PULL_REGISTRY, REGISTRY, registry_auth, registry_credentials

pytestmark = pytest.mark.timeout(120)

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
WRONG = ("freshen", "not-the-password")
EMPTY_BLOB = "sha256:" + hashlib.sha256(b"").hexdigest()


@pytest.fixture(scope="module")
def released() -> Iterator[tuple[str, str, bytes]]:
    """A repository holding a release tag `1.0` (pushed with the credentials): (repository,
    manifest digest, manifest bytes). Deleted afterwards."""
    repository = f"freshen-test-{uuid.uuid4().hex[:12]}/access"
    client = docker.from_env()
    try:
        client.images.get(LOCAL_BASE).tag(f"{REGISTRY}/{repository}", "1.0")
        lines = client.api.push(
            f"{REGISTRY}/{repository}", "1.0", stream=True, decode=True, auth_config=registry_auth()
        )
        assert all("error" not in line for line in lines)
        client.api.remove_image(f"{REGISTRY}/{repository}:1.0")
        response = _call("GET", REGISTRY, repository, "manifests/1.0", registry_credentials())
        assert response.status_code == 200, response.text
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        yield repository, digest, response.content
        _call("DELETE", REGISTRY, repository, f"manifests/{digest}", registry_credentials())
    finally:
        client.close()


def _call(
    method: str,
    host: str,
    repository: str,
    path: str,
    auth: tuple[str, str] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return requests.request(
        method,
        f"http://{host}/v2/{repository}/{path}",
        auth=auth,
        data=body,
        headers={"Accept": MANIFEST, **(headers or {})},
        timeout=30,
    )


def _writes(repository: str, manifest: bytes, digest: str) -> dict[str, tuple[str, str, dict]]:
    """Every kind of write: (method, path, extra request arguments) by name."""
    put = {"body": manifest, "headers": {"Content-Type": MANIFEST}}
    return {
        "blob upload": ("POST", "blobs/uploads/", {}),
        "monolithic blob upload": ("POST", f"blobs/uploads/?digest={EMPTY_BLOB}", {"body": b""}),
        "manifest PUT": ("PUT", f"manifests/x-{uuid.uuid4().hex[:8]}", put),
        "tag DELETE": ("DELETE", "manifests/1.0", {}),
        "manifest DELETE": ("DELETE", f"manifests/{digest}", {}),
        "blob DELETE": ("DELETE", f"blobs/{EMPTY_BLOB}", {}),
    }


@pytest.mark.parametrize("credentials", [None, WRONG], ids=["no credentials", "wrong ones"])
def test_every_call_to_the_push_registry_without_its_credentials_is_401(
    released: tuple[str, str, bytes], credentials: tuple[str, str] | None
) -> None:
    repository, digest, manifest = released
    for name, (method, path, extra) in _writes(repository, manifest, digest).items():
        response = _call(method, REGISTRY, repository, path, credentials, **extra)
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Basic"), name
    pull = _call("GET", REGISTRY, repository, "manifests/1.0", credentials)
    assert pull.status_code == 401
    assert _call("GET", REGISTRY, repository, "manifests/1.0", registry_credentials()).ok


def test_the_push_registry_takes_uploads_manifests_and_deletes_with_its_credentials(
    released: tuple[str, str, bytes],
) -> None:
    repository, digest, manifest = released
    credentials = registry_credentials()
    upload = _call("POST", REGISTRY, repository, "blobs/uploads/", credentials)
    assert upload.status_code == 202, upload.text
    location = upload.headers["Location"]  # cancel the upload: nothing is left behind
    url = urljoin(f"http://{REGISTRY}/", location)
    cancel = requests.delete(url, auth=credentials, timeout=30)
    assert cancel.status_code == 204, cancel.text
    tag = f"x-{uuid.uuid4().hex[:8]}"
    put = _call(
        "PUT", REGISTRY, repository, f"manifests/{tag}", credentials, manifest,
        {"Content-Type": MANIFEST},
    )  # fmt: skip
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == digest
    # Distribution 2.x cannot delete a tag alone (it answers 400 or 405, past the auth check):
    # deleting the manifest removes it with every tag on it.
    assert _call("DELETE", REGISTRY, repository, f"manifests/{tag}", credentials).status_code in (
        400,
        405,
    )


def test_the_pull_registry_refuses_every_write(released: tuple[str, str, bytes]) -> None:
    repository, digest, manifest = released
    before = _call("GET", PULL_REGISTRY, repository, "tags/list").json()["tags"]
    assert "1.0" in before
    for name, (method, path, extra) in _writes(repository, manifest, digest).items():
        for credentials in (None, registry_credentials()):
            response = _call(method, PULL_REGISTRY, repository, path, credentials, **extra)
            assert response.status_code in (401, 403, 405), (name, response.status_code)
    # Nothing changed: the release tag still points where it did, no new tag appeared.
    assert _call("GET", PULL_REGISTRY, repository, "tags/list").json()["tags"] == before
    assert (
        _call("HEAD", PULL_REGISTRY, repository, "manifests/1.0").headers["Docker-Content-Digest"]
        == digest
    )


def test_a_release_tag_pulls_anonymously_from_the_pull_registry(
    released: tuple[str, str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What a user (or a test worker) without credentials does: `docker pull` through the
    Engine, with a client config holding no login at all."""
    repository, digest, _ = released
    client = docker.from_env()
    try:
        image = client.images.pull(f"{PULL_REGISTRY}/{repository}", tag="1.0")
        assert f"{PULL_REGISTRY}/{repository}@{digest}" in image.attrs["RepoDigests"]
        by_digest = client.images.pull(f"{PULL_REGISTRY}/{repository}@{digest}")
        assert by_digest.id == image.id
        with pytest.raises(docker.errors.APIError, match=r"(?i)auth|unauthorized"):
            client.images.pull(f"{REGISTRY}/{repository}", tag="1.0")
        client.api.remove_image(f"{PULL_REGISTRY}/{repository}:1.0")
    finally:
        client.close()


def test_a_push_is_visible_on_the_pull_registry_at_once(
    released: tuple[str, str, bytes],
) -> None:
    """Tags and manifests are read from the shared storage on every call, not cached: a tag
    moved on 5000 is where a process without credentials reads it, right away."""
    repository, digest, manifest = released
    username, password = registry_credentials()
    pusher = RegistryClient(
        Settings(registry_username=username, registry_password=SecretStr(password))
    )
    reader = RegistryClient(Settings(pull_registry=PULL_REGISTRY))  # no credentials
    try:
        for round_ in range(5):
            tag = f"moved-{round_}-{uuid.uuid4().hex[:6]}"
            assert reader.tag_digest(PULL_REGISTRY, repository, tag) is None
            pusher.copy_to_tag(REGISTRY, repository, digest, tag)
            assert reader.tag_digest(PULL_REGISTRY, repository, tag) == digest
        assert json.loads(reader.get_manifest(PULL_REGISTRY, repository, digest).body) == (
            json.loads(manifest)
        )
    finally:
        pusher.close()
        reader.close()
