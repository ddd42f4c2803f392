"""shared.adapters.engine against the real Docker Engine, the local registry and a moto
container per test (no mocks).

The awscli definition is built once per module (~25 s) on the local Debian base and pushed to a
repository no other test uses; every container and local tag this module makes is removed.
"""

from __future__ import annotations

import gc
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from docker.errors import NotFound

from shared.adapters.engine import MANAGED_LABEL, Engine
from shared.config import ENV_PREFIX, Settings
from shared.definitions import ImageDefinition, load_definition
from shared.errors import StageError, TransientError
from tests.conftest import registry_credentials

REGISTRY = "127.0.0.1:5000"
PULL_REGISTRY = "127.0.0.1:5001"  # the same storage, anonymous and read-only
BASE_REPOSITORY = "library/debian-python"
BASE_TAG = "bookworm"
AWSCLI_VERSION = "1.46.3"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
AWSCLI_FOLDER = Path(__file__).resolve().parents[2] / "images" / "awscli"
RUN_ID = uuid.uuid4().hex[:12]
TARGET = f"{REGISTRY}/freshen-test-{RUN_ID}/awscli"
LABELS = {
    "org.opencontainers.image.version": AWSCLI_VERSION,
    "org.opencontainers.image.source": "https://example.invalid/freshen",
    "org.opencontainers.image.revision": RUN_ID,
}


def make_settings(**overrides: object) -> Settings:
    """Settings from keyword arguments only: FRESHEN_* variables of the shell are ignored."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            patch.delenv(key)
        username, password = registry_credentials()  # as a build worker holds them
        values: dict[str, object] = {"push_registry": REGISTRY, "test_output_tail_lines": 20}
        values |= {"registry_username": username, "registry_password": password}
        return Settings(**(values | overrides))  # type: ignore[arg-type]


def registry_digest(repository: str, reference: str) -> str:
    response = requests.head(
        f"http://{REGISTRY}/v2/{repository}/manifests/{reference}",
        headers={"Accept": MANIFEST_V2},
        auth=registry_credentials(),
        timeout=10,
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


CANDIDATE = f"develop-{RUN_ID}"


def step_names(script: Path) -> list[str]:
    return re.findall(r"^step (\S+)", script.read_text(encoding="utf-8"), re.MULTILINE)


def aws_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FRESHEN_TEST_ID": uuid.uuid4().hex,
    }


def container_name(purpose: str) -> str:
    return f"freshen-test-{RUN_ID}-{purpose}-{uuid.uuid4().hex[:6]}"


def untag(client: docker.DockerClient, *references: str) -> None:
    """Remove local references this module made (an image still tagged elsewhere stays)."""
    for ref in references:
        with suppress(NotFound):
            client.api.remove_image(ref)


def my_containers(client: docker.DockerClient) -> list[str]:
    found = client.api.containers(all=True, filters={"label": MANAGED_LABEL})
    return [
        c["Id"]
        for c in found
        if c["Image"].startswith(f"{REGISTRY}/freshen-test-{RUN_ID}")
        or any(n.lstrip("/").startswith(f"freshen-test-{RUN_ID}") for n in c["Names"])
    ]


def my_networks(client: docker.DockerClient) -> list[str]:
    found = client.api.networks(filters={"name": f"freshen-test-{RUN_ID}"})
    return [str(n["Name"]) for n in found]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = Engine(settings)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def base_pinned() -> str:
    return f"{REGISTRY}/{BASE_REPOSITORY}@{registry_digest(BASE_REPOSITORY, BASE_TAG)}"


@pytest.fixture(scope="module")
def awscli() -> ImageDefinition:
    return load_definition(AWSCLI_FOLDER)


@pytest.fixture(scope="module")
def built(
    engine: Engine, client: docker.DockerClient, awscli: ImageDefinition, base_pinned: str
) -> Iterator[str]:
    """`TARGET@digest` of the awscli candidate, built and pushed once."""
    digest = engine.build_and_push(awscli, AWSCLI_VERSION, base_pinned, TARGET, LABELS, CANDIDATE)
    yield f"{TARGET}@{digest}"
    untag(client, f"{TARGET}:develop", f"{TARGET}@{digest}")


@pytest.mark.timeout(300)
def test_build_pushes_the_runs_own_tag_and_returns_its_registry_digest(
    built: str, client: docker.DockerClient
) -> None:
    digest = built.partition("@")[2]
    repository = TARGET.removeprefix(f"{REGISTRY}/")
    assert registry_digest(repository, CANDIDATE) == digest
    labels = client.api.inspect_image(built)["Config"]["Labels"]
    assert LABELS.items() <= labels.items()
    local = client.api.inspect_image(built)["RepoTags"]
    assert f"{TARGET}:{CANDIDATE}" not in local  # the engine keeps one local name per target


def engine_events(client: docker.DockerClient, since: int, kind: str) -> list[dict[str, Any]]:
    """The engine's `kind` (container, image) events from `since` until now."""
    until = int(time.time()) + 1
    found = client.api.events(since=since, until=until, decode=True, filters={"type": kind})
    return list(found)


@pytest.mark.timeout(300)
def test_read_os_reads_the_images_files_without_starting_it(
    engine: Engine, built: str, client: docker.DockerClient
) -> None:
    since = int(time.time()) - 1
    os_id, os_version = engine.read_os(built)
    assert os_id == "debian"
    assert re.fullmatch(r"12\.\d+", os_version), os_version
    names = {built, client.api.inspect_image(built)["Id"]}
    done = [
        e["Action"]
        for e in engine_events(client, since, "container")
        if e["Actor"]["Attributes"].get("image") in names
    ]
    assert "create" in done and "destroy" in done  # a container of its own, removed
    assert "start" not in done


@pytest.mark.timeout(300)
def test_a_candidate_the_engine_built_is_not_pulled_again(
    built: str, client: docker.DockerClient
) -> None:
    # A test worker on the build's engine: it names the candidate on the pull registry, where
    # this engine never pulled it from; the engine holds it under the push registry's name.
    as_tested = built.replace(REGISTRY, PULL_REGISTRY, 1)
    untag(client, as_tested)
    reader = Engine(make_settings(pull_registry=PULL_REGISTRY), client=client)
    since = int(time.time()) - 1
    found = reader.installed_distributions(as_tested)
    assert ("awscli", AWSCLI_VERSION) in [(d.name, d.version) for d in found]
    pulls = [e for e in engine_events(client, since, "image") if e["Action"] == "pull"]
    repository = as_tested.partition("@")[0]
    assert [e["Actor"]["ID"] for e in pulls if e["Actor"]["ID"].startswith(repository)] == []


@pytest.mark.timeout(300)
def test_run_test_passes_against_its_own_moto(
    engine: Engine, built: str, awscli: ImageDefinition, client: docker.DockerClient
) -> None:
    name = container_name("pass")
    outcome = engine.run_test(built, awscli.test_script, aws_env(), 240, name)
    assert outcome.passed, outcome
    assert outcome.exit_code == 0
    assert outcome.failed_step is None
    assert [s.name for s in outcome.steps] == step_names(awscli.test_script)
    assert outcome.steps[0].name == "aws-version" and outcome.steps[-1].name == "s3-rb"
    assert all(s.exit_code == 0 for s in outcome.steps)
    assert f"aws-cli/{AWSCLI_VERSION}" in outcome.steps[0].output_tail
    assert "testing" not in outcome.output_tail.replace("freshen-test", "")
    assert client.api.containers(all=True, filters={"name": name}) == []  # moto's too
    assert client.api.networks(names=[name]) == []


@pytest.mark.timeout(300)
def test_run_test_names_the_first_failing_step(
    built: str, awscli: ImageDefinition, client: docker.DockerClient
) -> None:
    # Real-AWS mode on a network that goes nowhere: the endpoint cannot be reached.
    offline = Engine(make_settings(test_aws="real", test_network="none"), client=client)
    env = aws_env() | {"AWS_MAX_ATTEMPTS": "1"}  # fail in 1 s, not 20 s of retries
    outcome = offline.run_test(built, awscli.test_script, env, 240, container_name("fail"))
    assert not outcome.passed
    assert outcome.exit_code not in (0, None)
    assert outcome.steps[0].name == "aws-version" and outcome.steps[0].exit_code == 0
    failing = outcome.steps[-1]
    assert outcome.failed_step == failing.name == "ec2-describe-instances"
    assert failing.exit_code != 0
    assert "Could not connect to the endpoint URL" in failing.output_tail
    assert len(failing.output_tail.splitlines()) <= 20


@pytest.mark.timeout(300)
def test_run_test_kills_the_container_at_the_time_limit(
    engine: Engine, built: str, client: docker.DockerClient, tmp_path: Path
) -> None:
    script = tmp_path / "slow.sh"
    script.write_text("echo ::freshen-step-begin nap\necho napping\nsleep 120\n")
    name = container_name("slow")
    started = time.monotonic()
    outcome = engine.run_test(built, script, {}, 3, name)
    assert time.monotonic() - started < 60
    assert not outcome.passed
    assert outcome.exit_code is None
    assert outcome.failed_step == "timeout"
    assert outcome.steps == ()
    assert "napping" in outcome.output_tail
    left = client.api.containers(all=True, filters={"label": MANAGED_LABEL, "name": name})
    assert left == []


@pytest.mark.timeout(300)
def test_failure_outside_steps_is_the_script_and_a_stale_test_is_replaced(
    engine: Engine, built: str, client: docker.DockerClient, tmp_path: Path
) -> None:
    script = tmp_path / "exit.sh"
    script.write_text(
        "echo ::freshen-step-begin fine\necho ok\necho\necho ::freshen-step-end fine 0\n"
        "echo broken after the steps >&2\nexit 4\n"
    )
    name = container_name("stale")
    # What a killed attempt of the same test leaves: its container, network and moto.
    client.api.create_network(name, internal=True, labels={MANAGED_LABEL: "test"})
    on_network = client.api.create_host_config(network_mode=name)
    for left in (name, f"{name}-moto"):
        client.api.create_container(
            built, name=left, labels={MANAGED_LABEL: "test"}, host_config=on_network
        )
    outcome = engine.run_test(built, script, {}, 60, name)
    assert (outcome.passed, outcome.exit_code, outcome.failed_step) == (False, 4, "script")
    assert [(s.name, s.exit_code, s.output_tail) for s in outcome.steps] == [("fine", 0, "ok")]
    assert outcome.output_tail.endswith("broken after the steps")
    assert client.api.containers(all=True, filters={"name": name}) == []
    assert client.api.networks(names=[name]) == []


@pytest.mark.timeout(120)
def test_leftovers_go_containers_and_moto_first_then_networks(
    engine: Engine, built: str, client: docker.DockerClient
) -> None:
    stage = f"sweep-{RUN_ID}"  # a stage label of its own: other sessions' tests stay untouched
    name = container_name("sweep")
    client.api.create_network(name, internal=True, labels={MANAGED_LABEL: stage})
    on_network = client.api.create_host_config(network_mode=name, init=True)
    for left in (name, f"{name}-moto"):
        container = client.api.create_container(
            built,
            name=left,
            entrypoint=["sleep", "300"],
            labels={MANAGED_LABEL: stage},
            host_config=on_network,
        )
        client.api.start(container)
    assert engine.remove_leftovers(stage, older_than_s=3600) == 0  # young: a live attempt's
    time.sleep(2.5)
    assert engine.remove_leftovers(stage, older_than_s=1) == 3
    assert client.api.containers(all=True, filters={"name": name}) == []
    assert client.api.networks(names=[name]) == []


@pytest.mark.timeout(300)
def test_failing_build_is_a_stage_error_with_the_log_tail(
    engine: Engine, client: docker.DockerClient, base_pinned: str, tmp_path: Path
) -> None:
    folder = tmp_path / f"broken-{RUN_ID}"
    folder.mkdir()
    (folder / "image.toml").write_text(
        '[source]\npypi = "awscli"\n[base]\nimage = "python:3-alpine"\n'
        '[target]\nrepository = "freshen/broken"\n'
    )
    (folder / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo about to fail: $((40 + 2)) && exit 3\n"
    )
    (folder / "test.sh").write_text("exit 0\n")
    definition = load_definition(folder)
    target = f"{REGISTRY}/freshen-test-{RUN_ID}/broken"
    with pytest.raises(StageError) as caught:
        engine.build_and_push(definition, AWSCLI_VERSION, base_pinned, target, LABELS, CANDIDATE)
    assert (caught.value.image, caught.value.stage) == (definition.name, "build")
    assert "returned a non-zero code: 3" in str(caught.value)
    assert "about to fail: 42" in str(caught.value)
    assert client.api.images(name=target) == []


# A build step that fails with 3 when it reaches the host's Redis or registry on 127.0.0.1 (as on
# the host network) and with 4 when it cannot reach the package index.
NETWORK_PROBE = """
import socket, sys
for port in (6379, 5000):
    if socket.socket().connect_ex(("127.0.0.1", port)) == 0:
        sys.exit(3)
try:
    socket.create_connection(("pypi.org", 443), timeout=10).close()
except OSError:
    sys.exit(4)
"""


@pytest.mark.timeout(300)
def test_a_build_reaches_the_index_not_the_hosts_services_and_the_setting_picks_its_network(
    engine: Engine, client: docker.DockerClient, base_pinned: str, tmp_path: Path
) -> None:
    folder = tmp_path / f"probe-{RUN_ID}"
    folder.mkdir()
    (folder / "image.toml").write_text(
        '[source]\npypi = "awscli"\n[base]\nimage = "python:3-alpine"\n'
        '[target]\nrepository = "freshen/probe"\n'
    )
    (folder / "probe.py").write_text(f"{NETWORK_PROBE}# {RUN_ID}\n")  # never from the cache
    dockerfile = "ARG BASE\nFROM ${BASE}\nCOPY probe.py /\nRUN python3 /probe.py\n"
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "test.sh").write_text("exit 0\n")
    definition = load_definition(folder)
    target = f"{REGISTRY}/freshen-test-{RUN_ID}/probe"
    try:  # the default, the bridge: the index yes, the host's loopback no
        engine.build_and_push(definition, AWSCLI_VERSION, base_pinned, target, LABELS, CANDIDATE)
        (folder / "probe.py").write_text(f"{NETWORK_PROBE}# {RUN_ID} again\n")
        offline = Engine(make_settings(build_network="none"), client=client)
        with pytest.raises(StageError, match="returned a non-zero code: 4"):
            offline.build_and_push(definition, "1.0.1", base_pinned, target, LABELS, CANDIDATE)
    finally:
        untag(client, f"{target}:develop")


@pytest.mark.timeout(300)
def test_unreachable_registry_on_push_is_transient_and_hides_credentials(
    client: docker.DockerClient, awscli: ImageDefinition, base_pinned: str, built: str
) -> None:
    closed = "127.0.0.1:9"
    password = f"s3cret-{RUN_ID}"
    settings = make_settings(
        push_registry=closed, registry_username="freshen", registry_password=password
    )
    engine = Engine(settings, client=client)
    target = f"{closed}/freshen-test-{RUN_ID}/awscli"
    try:
        with pytest.raises(TransientError) as caught:
            engine.build_and_push(awscli, AWSCLI_VERSION, base_pinned, target, LABELS, CANDIDATE)
    finally:
        untag(client, f"{target}:{CANDIDATE}")
    assert password not in str(caught.value)
    assert "pushing" in str(caught.value)


@contextmanager
def leaked_sockets_ignored() -> Iterator[None]:
    """docker-py does not close the socket of a failed unix-socket connect (its
    transport/unixconn.py); let those be collected here, where that is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


def test_unreachable_engine_is_transient(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    socket = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)
    with leaked_sockets_ignored():
        with pytest.raises(TransientError, match="Docker Engine unreachable"):
            Engine(settings)
        offline = docker.DockerClient(base_url=socket, version="1.41", timeout=5)
        with closing(offline), pytest.raises(TransientError, match="Docker Engine unreachable"):
            Engine(settings, client=offline).read_os(f"{TARGET}:{CANDIDATE}")


def test_no_freshen_container_or_network_is_left(client: docker.DockerClient) -> None:
    assert my_containers(client) == []
    assert my_networks(client) == []
