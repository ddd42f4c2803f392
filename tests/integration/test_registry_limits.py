"""What a hostile registry cannot do to the registry client: send credentials to a token service
on another host, or push a huge manifest or token answer into memory."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from shared.adapters.registry import MANIFEST_MAX_BYTES, TOKEN_MAX_BYTES, RegistryClient
from shared.config import ENV_PREFIX, Settings
from shared.errors import TransientError, UpstreamError
from shared.model.reference import ImageRef
from tests.support.registry_proxy import LoopbackServer, Reply, Seen

pytestmark = pytest.mark.timeout(60)
PASSWORD = "pw-Realm-Zq8vN3x-only"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(autouse=True)
def _no_freshen_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


def settings(registry: str, *insecure: str, **extra: object) -> Settings:
    values: dict[str, object] = {
        "push_registry": registry,
        "insecure_registries": (registry, *insecure),
        "registry_username": "robot",
        "registry_password": SecretStr(PASSWORD),
        "http_retries": 0,
        "http_timeout_s": 5.0,
    }
    return Settings(**(values | extra))  # type: ignore[arg-type]


@pytest.fixture
def token_service() -> Iterator[LoopbackServer]:
    token = json.dumps({"token": "t" * 32}).encode()
    with LoopbackServer(lambda _seen: Reply(200, {"Content-Type": "application/json"}, token)) as s:
        yield s


def challenging(realm_host: str) -> LoopbackServer:
    """A registry whose every answer is a 401 naming a token service on `realm_host`."""

    def answer(seen: Seen) -> Reply:
        if "authorization" in seen.headers:
            return Reply(200, {"Docker-Content-Digest": "sha256:" + "a" * 64})
        realm = f'Bearer realm="http://{realm_host}/token",service="hostile"'
        return Reply(401, {"WWW-Authenticate": realm})

    return LoopbackServer(answer)


def test_a_token_realm_on_another_host_gets_no_credentials(token_service: LoopbackServer) -> None:
    with challenging(token_service.host) as registry:
        client = RegistryClient(settings(registry.host, token_service.host))
        with pytest.raises(UpstreamError, match="add it to FRESHEN_TOKEN_REALM_HOSTS") as info:
            client.head_digest(ImageRef(registry.host, "team/tool", "latest"))
        client.close()
    assert token_service.seen == []
    assert PASSWORD not in str(info.value)


def test_a_token_realm_allowed_by_the_setting_is_used(token_service: LoopbackServer) -> None:
    with challenging(token_service.host) as registry:
        allowed = settings(
            registry.host, token_service.host, token_realm_hosts=(token_service.host,)
        )
        client = RegistryClient(allowed)
        assert client.head_digest(ImageRef(registry.host, "team/tool", "latest"))
        client.close()
    assert len(token_service.seen) == 1


def test_oversized_manifests_and_token_answers_are_refused() -> None:
    huge = b"{" + b" " * (MANIFEST_MAX_BYTES + 1) + b"}"
    with LoopbackServer(lambda _seen: Reply(200, {"Content-Type": MANIFEST}, huge)) as registry:
        client = RegistryClient(settings(registry.host))
        with pytest.raises(UpstreamError, match=f"exceeds {MANIFEST_MAX_BYTES}"):
            client.get_manifest(registry.host, "team/tool", "latest")
        client.close()
    big_token = json.dumps({"token": "t" * (TOKEN_MAX_BYTES + 1)}).encode()
    with (
        LoopbackServer(lambda _seen: Reply(200, {}, big_token)) as tokens,
        challenging(tokens.host) as registry,
    ):
        client = RegistryClient(
            settings(registry.host, tokens.host, token_realm_hosts=(tokens.host,))
        )
        with pytest.raises(UpstreamError, match=f"exceeds {TOKEN_MAX_BYTES}"):
            client.head_digest(ImageRef(registry.host, "team/tool", "latest"))
        client.close()


def test_headers_dripped_a_byte_at_a_time_meet_a_total_deadline() -> None:
    """Each byte comes well within the per-read timeout, so only a deadline for the whole
    status line and headers stops the request; the client hangs up before the server would."""
    listener = socket.create_server(("127.0.0.1", 0))
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    outcome: dict[str, bool] = {}

    def drip() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        deadline = time.monotonic() + 20  # four times the client's deadline
        try:
            while time.monotonic() < deadline:
                conn.sendall(b"a")
                time.sleep(0.5)
            outcome["client_hung_up"] = False
        except OSError:
            outcome["client_hung_up"] = True
        finally:
            conn.close()

    server = threading.Thread(target=drip, daemon=True)
    server.start()
    client = RegistryClient(settings(host, http_timeout_s=5.0))
    with pytest.raises(TransientError, match="retry later"):
        client.tag_digest(host, "team/tool", "latest")
    client.close()
    server.join(30)
    listener.close()
    assert outcome == {"client_hung_up": True}
