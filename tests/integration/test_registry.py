"""RegistryClient against the real registry on 127.0.0.1:5000 (with its credentials) and its
read-only anonymous view on 127.0.0.1:5001, an auth proxy in front of it, and loopback servers
that misbehave on purpose. Images are pushed with the docker CLI (logged in through a
DOCKER_CONFIG of this module's own), each test into its own repository, emptied afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import tarfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from shared.adapters.registry import Manifest, RegistryClient, sha256_digest
from shared.config import ENV_PREFIX, Settings
from shared.constants import MANIFEST_ACCEPT
from shared.errors import InvalidInput, TransientError, UpstreamError
from shared.model.reference import ImageRef, parse
from tests.conftest import BASE_IMAGE, LOCAL_BASE, PULL_REGISTRY, REGISTRY, registry_credentials
from tests.support.registry_proxy import AuthProxy, LoopbackServer, Reply, Seen

pytestmark = pytest.mark.timeout(60)

BASE = LOCAL_BASE
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
VERSION_LABEL = "org.opencontainers.image.version"
# Distinctive fake credentials, so a leak into a message or traceback is easy to spot.
USERNAME = "freshen-robot-7c1e"
PASSWORD = "pw-Zq8vN3xTestOnly-4b2d"
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")

# What the misbehaving loopback servers serve: a well-formed manifest and its digest.
STUB_REPO = "team/tool"
STUB_BODY = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 2,
        },
        "layers": [],
    }
).encode()
STUB_DIGEST = sha256_digest(STUB_BODY)
STUB_OK = Reply(200, {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": STUB_DIGEST})


def make_settings(*extra_insecure: str, **overrides: Any) -> Settings:
    """Settings of a process that pushes to the shared registry: with its credentials."""
    username, password = registry_credentials()
    values: dict[str, Any] = {
        "insecure_registries": (REGISTRY, PULL_REGISTRY, *extra_insecure),
        "push_registry": REGISTRY,
        "registry_username": username,
        "registry_password": SecretStr(password),
        "http_retries": 1,
        "http_timeout_s": 5.0,
        "retry_after_max_s": 5.0,
    }
    return Settings(**(values | overrides))


def with_credentials(host: str, password: str = PASSWORD, **overrides: Any) -> Settings:
    """Settings whose push registry is `host`, with the test credentials."""
    values: dict[str, Any] = {"push_registry": host, "registry_username": USERNAME}
    values["registry_password"] = SecretStr(password)
    return make_settings(host, **(values | overrides))


@pytest.fixture(autouse=True)
def _no_freshen_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def connect() -> Iterator[Callable[[Settings], RegistryClient]]:
    clients: list[RegistryClient] = []

    def make(settings: Settings) -> RegistryClient:
        clients.append(RegistryClient(settings))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def repository() -> Iterator[str]:
    name = f"freshen-test-{uuid.uuid4().hex[:12]}/reg"
    yield name
    _empty_repository(name)


# --- helpers that use the docker CLI and plain HTTP, independently of RegistryClient --------


@pytest.fixture(scope="module", autouse=True)
def _docker_login(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The docker CLI of this module logs in to REGISTRY through a config folder of its own
    (never ~/.docker, whose credentials every process on the machine would inherit)."""
    folder = tmp_path_factory.mktemp("docker-config")
    auth = base64.b64encode(":".join(registry_credentials()).encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {REGISTRY: {"auth": auth}}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_CONFIG", str(folder))
        yield


def docker(*args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, timeout=90, check=False
    )
    assert result.returncode == 0, f"docker {args[0]}: {result.stderr.decode()[-800:]}"
    return result.stdout.decode()


def push(local: str, repository: str, tag: str) -> str:
    """Push a local image as REGISTRY/repository:tag; return the digest docker push reports."""
    remote = f"{REGISTRY}/{repository}:{tag}"
    docker("tag", local, remote)
    try:
        output = docker("push", remote)
    finally:
        docker("rmi", remote)
    match = _PUSHED_DIGEST.search(output)
    assert match, output
    return match.group(1)


def push_tiny_image(repository: str, tag: str, version: str = "0.0.1") -> str:
    """A one-file image, unique per call, with an OCI version label; returns its digest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        content = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    local = f"freshen-test-import-{uuid.uuid4().hex[:12]}:latest"
    docker(
        "import",
        "--change",
        f"LABEL {VERSION_LABEL}={version}",
        "-",
        local,
        stdin=buffer.getvalue(),
    )
    try:
        return push(local, repository, tag)
    finally:
        docker("rmi", local)


def raw_manifest(repository: str, reference: str) -> tuple[bytes, str]:
    """The manifest bytes and media type as the registry serves them (plain urllib)."""
    request = urllib.request.Request(
        f"http://{REGISTRY}/v2/{repository}/manifests/{reference}",
        headers={"Accept": ", ".join(MANIFEST_ACCEPT), "Authorization": _authorization()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read(), response.headers["Content-Type"]


def _empty_repository(repository: str) -> None:
    """Delete every manifest the test left in `repository` (the registry allows deletes)."""
    url = f"http://{REGISTRY}/v2/{repository}/tags/list"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers={"Authorization": _authorization()}), timeout=10
        ) as r:
            tags = json.load(r).get("tags") or []
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc
        return
    digests = {"sha256:" + hashlib.sha256(raw_manifest(repository, t)[0]).hexdigest() for t in tags}
    for digest in digests:
        url = f"http://{REGISTRY}/v2/{repository}/manifests/{digest}"
        request = urllib.request.Request(
            url, method="DELETE", headers={"Authorization": _authorization()}
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 404, exc


def _authorization() -> str:
    return "Basic " + base64.b64encode(":".join(registry_credentials()).encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the real registry -----------------------------------------------------------------------


def test_head_digest_is_the_digest_docker_push_reports(
    repository: str, connect: Callable[[Settings], RegistryClient]
) -> None:
    docker("pull", BASE)
    pushed = push(BASE, repository, "base")
    client = connect(make_settings())
    assert client.head_digest(parse(f"{REGISTRY}/{repository}:base")) == pushed
    assert client.head_digest(parse(BASE)) == pushed  # same image, so the same manifest
    assert client.head_digest(parse(f"{REGISTRY}/{repository}@{pushed}")) == pushed


def test_copy_to_tag_points_the_tag_at_the_exact_digest_and_bytes(
    repository: str, connect: Callable[[Settings], RegistryClient]
) -> None:
    first = push_tiny_image(repository, "first")
    second = push_tiny_image(repository, "second")
    assert first != second
    client = connect(make_settings())

    client.copy_to_tag(REGISTRY, repository, first, "latest")
    assert client.tag_digest(REGISTRY, repository, "latest") == first
    client.copy_to_tag(REGISTRY, repository, second, "latest")
    assert client.tag_digest(REGISTRY, repository, "latest") == second

    tagged, media_type = raw_manifest(repository, "latest")
    source, _ = raw_manifest(repository, second)
    assert tagged == source
    assert client.get_manifest(REGISTRY, repository, "latest") == Manifest(
        media_type, source, second
    )


def test_copy_of_a_multi_platform_index_keeps_its_bytes(
    repository: str, connect: Callable[[Settings], RegistryClient]
) -> None:
    client = connect(make_settings())
    platform = client.get_manifest(REGISTRY, repository, push_tiny_image(repository, "amd64"))
    entry: dict[str, Any] = {"mediaType": platform.media_type, "digest": platform.digest}
    entry |= {"size": len(platform.body), "platform": {"architecture": "amd64", "os": "linux"}}
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}, indent=3)
    index = Manifest(OCI_INDEX, body.encode(), sha256_digest(body.encode()))

    assert client.put_manifest(REGISTRY, repository, "multi", index) == index.digest
    client.copy_to_tag(REGISTRY, repository, index.digest, "latest")

    assert client.head_digest(ImageRef(REGISTRY, repository, "latest")) == index.digest
    assert raw_manifest(repository, "latest") == (index.body, OCI_INDEX)
    with pytest.raises(UpstreamError, match="multi-platform index"):
        client.image_config(REGISTRY, repository, index.digest)


def test_image_config_carries_the_labels(
    repository: str, connect: Callable[[Settings], RegistryClient]
) -> None:
    digest = push_tiny_image(repository, "labelled", version="1.2.3")
    config = connect(make_settings()).image_config(REGISTRY, repository, digest)
    assert config["config"]["Labels"][VERSION_LABEL] == "1.2.3"
    assert config["rootfs"]["type"] == "layers"


def test_tag_digest_is_none_for_a_missing_tag_or_repository(
    repository: str, connect: Callable[[Settings], RegistryClient]
) -> None:
    present = push_tiny_image(repository, "present")
    client = connect(make_settings())
    assert client.tag_digest(REGISTRY, repository, "present") == present
    assert client.tag_digest(REGISTRY, repository, "absent") is None
    assert client.tag_digest(REGISTRY, f"freshen-test-{uuid.uuid4().hex}/none", "latest") is None


def test_missing_repository_is_an_upstream_error_naming_it(
    connect: Callable[[Settings], RegistryClient],
) -> None:
    missing = f"freshen-test-{uuid.uuid4().hex[:12]}/missing"
    client = connect(make_settings())
    with pytest.raises(UpstreamError, match="not found") as info:
        client.head_digest(ImageRef(REGISTRY, missing, "1.0"))
    assert f"{REGISTRY}/{missing}:1.0" in str(info.value)
    with pytest.raises(UpstreamError, match=f"{missing}@sha256:0+: not found"):
        client.get_manifest(REGISTRY, missing, "sha256:" + "0" * 64)


def test_invalid_names_are_rejected_before_any_request(
    connect: Callable[[Settings], RegistryClient],
) -> None:
    with LoopbackServer(lambda seen: STUB_OK) as server:
        client = connect(make_settings(server.host))
        with pytest.raises(InvalidInput):
            client.copy_to_tag(server.host, STUB_REPO, "sha256:abc", "latest")
        with pytest.raises(InvalidInput):
            client.copy_to_tag(server.host, STUB_REPO, STUB_DIGEST, "../latest")
        with pytest.raises(InvalidInput):
            client.tag_digest(server.host, "Upper/Case", "latest")
        with pytest.raises(InvalidInput):
            Manifest(DOCKER_MANIFEST, STUB_BODY + b" ", STUB_DIGEST)
    assert server.seen == []


# --- auth: a proxy in front of the real registry ---------------------------------------------


@pytest.mark.parametrize("token_field", ["token", "access_token"])
def test_bearer_token_flow(
    repository: str, connect: Callable[[Settings], RegistryClient], token_field: str
) -> None:
    digest = push_tiny_image(repository, "source")
    with AuthProxy(USERNAME, PASSWORD, token_field=token_field) as proxy:
        client = connect(with_credentials(proxy.host))
        ref = ImageRef(proxy.host, repository, "source")
        assert client.head_digest(ref) == digest
        assert client.head_digest(ref) == digest  # the cached token: no second token request
        client.copy_to_tag(proxy.host, repository, digest, "promoted")
        scopes = proxy.token_scopes()
    assert scopes == [f"repository:{repository}:pull", f"repository:{repository}:pull,push"]
    assert connect(make_settings()).tag_digest(REGISTRY, repository, "promoted") == digest


def test_basic_challenge_is_answered_with_the_credentials(
    repository: str, connect: Callable[[Settings], RegistryClient]
) -> None:
    digest = push_tiny_image(repository, "source")
    with AuthProxy(USERNAME, PASSWORD, scheme="basic") as proxy:
        client = connect(with_credentials(proxy.host))
        assert client.head_digest(ImageRef(proxy.host, repository, "source")) == digest
        client.copy_to_tag(proxy.host, repository, digest, "promoted")
    assert connect(make_settings()).tag_digest(REGISTRY, repository, "promoted") == digest


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_wrong_credentials_fail_without_showing_them(
    connect: Callable[[Settings], RegistryClient], scheme: str
) -> None:
    wrong = "wrong-pw-Kd93xQ-only"
    with AuthProxy(USERNAME, PASSWORD, scheme=scheme) as proxy:
        client = connect(with_credentials(proxy.host, password=wrong))
        with pytest.raises(UpstreamError) as info:
            client.head_digest(ImageRef(proxy.host, "library/debian-python", "bookworm"))
    message = str(info.value)
    assert proxy.host in message and "library/debian-python" in message
    assert "FRESHEN_REGISTRY_USERNAME" in message and "FRESHEN_REGISTRY_PASSWORD" in message
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
    encoded = base64.b64encode(f"{USERNAME}:{wrong}".encode()).decode()
    for secret in (wrong, PASSWORD, encoded):
        assert secret not in shown


def test_credentials_go_only_to_the_push_registry(
    connect: Callable[[Settings], RegistryClient],
) -> None:
    with AuthProxy(USERNAME, PASSWORD) as proxy:
        secret = SecretStr(PASSWORD)
        settings = make_settings(proxy.host, registry_username=USERNAME, registry_password=secret)
        client = connect(settings)
        with pytest.raises(UpstreamError, match=f"sent only to {REGISTRY}"):
            client.head_digest(ImageRef(proxy.host, "library/debian-python", "bookworm"))
        token_requests = [seen for seen in proxy.seen if seen.path.startswith("/token")]
    assert token_requests
    assert all("authorization" not in seen.headers for seen in token_requests)


# --- misbehaving registries ------------------------------------------------------------------


def test_server_errors_are_transient_after_the_retries(
    connect: Callable[[Settings], RegistryClient],
) -> None:
    with LoopbackServer(lambda seen: Reply(500, body=b"boom")) as server:
        client = connect(make_settings(server.host, http_retries=2))
        with pytest.raises(TransientError, match="HTTP 500") as info:
            client.head_digest(ImageRef(server.host, STUB_REPO, "1.0"))
    assert len(server.seen) == 3
    assert f"{server.host}/{STUB_REPO}:1.0" in str(info.value)


def test_429_with_retry_after_is_retried(connect: Callable[[Settings], RegistryClient]) -> None:
    def once_limited(seen: Seen) -> Reply:
        return STUB_OK if len(server.seen) > 1 else Reply(429, {"Retry-After": "1"})

    with LoopbackServer(once_limited) as server:
        client = connect(make_settings(server.host))
        started = time.monotonic()
        assert client.head_digest(ImageRef(server.host, STUB_REPO, "1.0")) == STUB_DIGEST
        waited = time.monotonic() - started
    assert len(server.seen) == 2
    assert waited >= 0.9


@pytest.mark.parametrize(
    "reply",
    [
        Reply(429, {"Retry-After": "0"}),
        Reply(403, {"ratelimit-remaining": "0;w=21600", "ratelimit-limit": "100;w=21600"}),
        Reply(503),
    ],
)
def test_rate_limits_and_outages_are_transient(
    connect: Callable[[Settings], RegistryClient], reply: Reply
) -> None:
    with LoopbackServer(lambda seen: reply) as server:
        client = connect(make_settings(server.host, http_retries=0))
        with pytest.raises(TransientError, match=f"HTTP {reply.status}"):
            client.head_digest(ImageRef(server.host, STUB_REPO, "1.0"))


def test_unreachable_and_slow_registries_are_transient(
    connect: Callable[[Settings], RegistryClient],
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    client = connect(make_settings(closed, http_retries=0))
    with pytest.raises(TransientError, match="ConnectionError"):
        client.head_digest(ImageRef(closed, STUB_REPO, "1.0"))
    slow = Reply(200, STUB_OK.headers, STUB_BODY, delay_s=2.0)
    with LoopbackServer(lambda seen: slow) as server:
        client = connect(make_settings(server.host, http_retries=0, http_timeout_s=0.5))
        started = time.monotonic()
        with pytest.raises(TransientError, match=f"{server.host}/{STUB_REPO}:1.0"):
            client.get_manifest(server.host, STUB_REPO, "1.0")
        assert time.monotonic() - started < 1.5  # the 0.5 s timeout, not the 2 s answer


@pytest.mark.parametrize(
    "headers",
    [{}, {"Docker-Content-Digest": "md5:0123"}, {"Docker-Content-Digest": "sha256:abc"}],
)
def test_missing_or_invalid_digest_header_is_an_upstream_error(
    connect: Callable[[Settings], RegistryClient], headers: dict[str, str]
) -> None:
    with LoopbackServer(lambda seen: Reply(200, headers)) as server:
        client = connect(make_settings(server.host))
        with pytest.raises(UpstreamError, match="Docker-Content-Digest") as info:
            client.head_digest(ImageRef(server.host, STUB_REPO, "1.0"))
        with pytest.raises(UpstreamError, match="Docker-Content-Digest"):
            client.tag_digest(server.host, STUB_REPO, "1.0")
    assert f"{server.host}/{STUB_REPO}:1.0" in str(info.value)


def test_manifest_that_does_not_match_its_digest_is_an_upstream_error(
    connect: Callable[[Settings], RegistryClient],
) -> None:
    other = "sha256:" + "b" * 64
    lying = Reply(200, {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": other}, STUB_BODY)
    with LoopbackServer(lambda seen: lying) as server:
        client = connect(make_settings(server.host))
        with pytest.raises(UpstreamError, match="digest"):
            client.get_manifest(server.host, STUB_REPO, "1.0")
        with pytest.raises(UpstreamError, match="digest"):
            client.get_manifest(server.host, STUB_REPO, other)
        with pytest.raises(UpstreamError, match="digest"):
            client.copy_to_tag(server.host, STUB_REPO, other, "latest")
    assert all(seen.method == "GET" for seen in server.seen)  # nothing was PUT


def test_unchanged_checks_reuse_one_connection(caplog: pytest.LogCaptureFixture) -> None:
    client = RegistryClient(Settings())  # a check worker's: no credentials, default settings
    try:
        with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
            digests = {client.head_digest(parse(BASE_IMAGE)) for _ in range(5)}
    finally:
        client.close()
    assert len(digests) == 1
    opened = [r for r in caplog.records if "Starting new HTTP connection" in r.getMessage()]
    assert len(opened) == 1
