"""Issue 9, test b: two test stages of two runs at the same time, each with its own moto on an
internal network of its own. Neither sees the other's bucket or instance; a test container
reaches neither the internet nor the host's loopback services; nothing of either test is left.

Real parts only: the real Docker Engine, real moto containers, the real awscli candidate built
on the local Debian base and pushed to the local registry (to a repository of this module).
Overlap is proven, not hoped for: each script records (host clock, shared by containers) when it
started, when its bucket and instance existed, when it listed, and when it ended; each lists only
after the other's resources existed.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from shared.adapters.containeroutput import TestOutcome
from shared.adapters.engine import Engine
from shared.config import ENV_PREFIX, Settings
from shared.definitions import load_definition
from shared.stages.verify import container_environment, container_files
from tests.conftest import BASE_IMAGE, PULL_REGISTRY, REGISTRY, registry_credentials

AWSCLI_VERSION = "1.46.3"
AWSCLI_FOLDER = Path(__file__).resolve().parents[2] / "images" / "awscli"
RUN_ID = uuid.uuid4().hex[:12]
REPOSITORY = f"freshen-isolation-{RUN_ID}/awscli"
TARGET = f"{REGISTRY}/{REPOSITORY}"
PREFIX = f"freshen-test-iso-{RUN_ID}"
# After its bucket and instance exist, each script waits this long before listing: far longer
# than the two tests' start skew (asserted from the timestamps, not assumed).
HOLD_S = 15
# Host services a test must not reach: the registry (and its read-only view) and Redis, on the
# container's 127.0.0.1 (the host's own when on the host network), on the default bridge's
# gateway and on its own network's gateway; and a listener of this test bound to 0.0.0.0 (a host
# service on every address) on both gateways.
PORTS = (5000, 5001, 6379)
PROBES = 2 + 3 * len(PORTS) + 2
SCRIPT = f"""#!/bin/sh
set -eu
now() {{ date +%s.%N; }}
me=$FRESHEN_TEST_ID
echo "started=$(now)"
aws s3 mb "s3://iso-$me" >/dev/null
ami=$(aws ssm get-parameter --output text --query Parameter.Value \\
  --name /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64)
aws ec2 run-instances --image-id "$ami" --instance-type t3.micro --count 1 >/dev/null \\
  --tag-specifications "ResourceType=instance,Tags=[{{Key=iso,Value=$me}}]"
echo "created=$(now)"
sleep {HOLD_S}
echo "listed=$(now)"
echo "buckets=$(aws s3api list-buckets --query 'Buckets[].Name' --output text)"
echo "instances=$(aws ec2 describe-instances --output text \\
  --query 'Reservations[].Instances[].Tags[?Key==`iso`].Value[]')"
python3 - <<'PY'
import os, socket
own = socket.gethostbyname(socket.gethostname()).rsplit(".", 1)[0] + ".1"
targets = [("pypi.org", 443), ("1.1.1.1", 443)]
targets += [(host, port) for host in ("127.0.0.1", "172.17.0.1", own) for port in {PORTS}]
targets += [(host, int(os.environ["PROBE_PORT"])) for host in ("172.17.0.1", own)]
for host, port in targets:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print(f"reached={{host}}:{{port}}")
    except OSError as exc:
        print(f"refused={{host}}:{{port}} {{type(exc).__name__}}")
PY
echo "ended=$(now)"
"""


def make_settings(**values: object) -> Settings:
    """Defaults (moto mode) with FRESHEN_* variables of the shell ignored."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            patch.delenv(key)
        return Settings(push_registry=REGISTRY, test_output_tail_lines=60, **values)  # type: ignore[arg-type]


def facts(outcome: TestOutcome) -> dict[str, list[str]]:
    """`key=value` lines of the script's output, every value of each key."""
    found: dict[str, list[str]] = {}
    for line in outcome.output_tail.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-z]+", key):
            found.setdefault(key, []).append(value.strip())
    return found


class Watcher(threading.Thread):
    """Samples this module's containers and networks every 0.1 s while the tests run."""

    def __init__(self, client: docker.DockerClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.most_at_once = 0  # moto containers running at one instant
        self.networks: dict[str, bool] = {}  # network → internal
        self.test_networks: dict[str, set[str]] = {}  # test container → networks it was on

    def run(self) -> None:
        while not self.stop.is_set():
            running = self.client.api.containers(filters={"name": PREFIX})
            motos = [c for c in running if any(n.endswith("-moto") for n in c["Names"])]
            self.most_at_once = max(self.most_at_once, len(motos))
            for container in running:
                name = container["Names"][0].lstrip("/")
                if not name.endswith("-moto"):
                    joined = set(container["NetworkSettings"]["Networks"])
                    self.test_networks.setdefault(name, set()).update(joined)
            for network in self.client.api.networks(names=[PREFIX]):
                self.networks[network["Name"]] = network["Internal"]
            time.sleep(0.1)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def built(client: docker.DockerClient) -> Iterator[str]:
    """The awscli candidate by digest, as the test worker (no credentials) pulls it: from the
    anonymous read-only view of the registry. (The layers are usually cached.)"""
    username, password = registry_credentials()
    engine = Engine(make_settings(registry_username=username, registry_password=password))
    try:
        base = BASE_IMAGE.rsplit(":", 1)[0]
        pinned = f"{base}@{client.images.get_registry_data(BASE_IMAGE).id}"
        digest = engine.build_and_push(
            load_definition(AWSCLI_FOLDER), AWSCLI_VERSION, pinned, TARGET, {}, f"iso-{RUN_ID}"
        )
    finally:
        engine.close()
    yield f"{PULL_REGISTRY}/{REPOSITORY}@{digest}"
    for ref in (f"{TARGET}:develop", f"{PULL_REGISTRY}/{REPOSITORY}@{digest}"):
        with suppress(NotFound):
            client.api.remove_image(ref)


@pytest.mark.timeout(600)
def test_two_tests_at_once_each_see_only_their_own_moto(
    built: str, client: docker.DockerClient, tmp_path: Path
) -> None:
    script = tmp_path / "isolation.sh"
    script.write_text(SCRIPT)
    outcomes: dict[str, TestOutcome] = {}
    listener = socket.create_server(("0.0.0.0", 0))  # a host service on every address
    probe_port = str(listener.getsockname()[1])
    errors: list[BaseException] = []

    def test(who: str) -> None:
        settings = make_settings()
        engine = Engine(settings)  # one per worker process, as in production
        try:
            env = container_environment(settings, "awscli", RUN_ID, f"{who}{RUN_ID}")
            env["PROBE_PORT"] = probe_port
            files = container_files(settings)
            outcomes[who] = engine.run_test(built, script, env, 300, f"{PREFIX}-{who}", files)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            engine.close()

    watcher = Watcher(client)
    watcher.start()
    threads = [threading.Thread(target=test, args=(who,)) for who in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=400)
    watcher.stop.set()
    watcher.join(timeout=10)
    listener.close()
    assert not errors, errors
    a, b = facts(outcomes["a"]), facts(outcomes["b"])
    for who, found in (("a", a), ("b", b)):
        assert outcomes[who].exit_code == 0, outcomes[who].output_tail
        me = f"{who}{RUN_ID}"
        assert found["buckets"] == [f"iso-{me}"], found  # its own bucket, nothing else
        assert found["instances"] == [me], found  # its own instance, nothing else
        assert not found.get("reached"), found  # no internet, no host service
        assert len(found["refused"]) == PROBES, found
    # The two tests overlapped: each listed after the other's bucket and instance existed.
    assert float(a["created"][0]) < float(b["listed"][0]), (a, b)
    assert float(b["created"][0]) < float(a["listed"][0]), (a, b)
    assert max(float(a["started"][0]), float(b["started"][0])) < min(
        float(a["ended"][0]), float(b["ended"][0])
    )
    # Two moto containers ran at once, each test container on a network of its own.
    assert watcher.most_at_once == 2, watcher.most_at_once
    assert watcher.test_networks == {f"{PREFIX}-a": {f"{PREFIX}-a"}, f"{PREFIX}-b": {f"{PREFIX}-b"}}
    assert watcher.networks == {f"{PREFIX}-a": True, f"{PREFIX}-b": True}  # both --internal
    # Nothing of either test is left: no test or moto container, no network.
    assert client.api.containers(all=True, filters={"name": PREFIX}) == []
    assert client.api.networks(names=[PREFIX]) == []
