"""Security 9: hostile values are rejected with a clear error before they reach Docker, the
registry or git. Stand-in registry, PyPI and git remote record that nothing reached them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import ConfigError, InvalidInput
from shared.model import validate
from shared.model.reference import parse
from shared.stages.check import read_upstream
from shared.testing.images import bare_remote, define_quick
from shared.testing.pypi_server import PyPIServer
from shared.testing.system import System
from tests.support.registry_proxy import LoopbackServer, Reply

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

HOSTILE = ["1.0; rm -rf /", "../../etc", "1.0\nlatest", "latest\n", "x" * 10_000, "$(id)", ""]
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def stand_ins(tmp_path: Path, redis_url: str) -> Iterator[tuple[System, LoopbackServer, Path]]:
    remote = bare_remote(tmp_path / "versions.git")
    with LoopbackServer(lambda _seen: Reply(500)) as registry:
        define_quick(
            tmp_path / "images",
            "target",
            "http://127.0.0.1:9/pypi",
            f"{registry.host}/a/b:1",
            "a/b",
        )
        env = {
            "FRESHEN_REDIS_URL": redis_url,
            "FRESHEN_IMAGES_DIR": str(tmp_path / "images"),
            "FRESHEN_PUSH_REGISTRY": registry.host,
            "FRESHEN_INSECURE_REGISTRIES": registry.host,
            "FRESHEN_GIT_URL": f"file://{remote}",
            "FRESHEN_GIT_WORKDIR": str(tmp_path / "git-work"),
        }
        system = System("hostile", env)
        try:
            yield system, registry, remote
        finally:
            system.close()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_versions_tags_names_and_references_are_rejected_untouched(
    stand_ins: tuple[System, LoopbackServer, Path], value: str
) -> None:
    system, registry, remote = stand_ins
    ctx = system.ctx
    with pytest.raises(InvalidInput, match="version"):
        read_upstream(ctx, ctx.definition("target"), value)  # a rebuild's --version
    with pytest.raises((InvalidInput, ConfigError)):
        ctx.definition(value)  # an image name from the CLI or a task argument
    with pytest.raises(InvalidInput, match="tag"):
        ctx.registry.copy_to_tag(registry.host, "a/b", DIGEST, value)
    with pytest.raises(InvalidInput):
        ctx.registry.copy_to_tag(registry.host, value, DIGEST, "latest")
    with pytest.raises(InvalidInput):
        parse(f"{registry.host}/a/b:{value}")
    assert ctx.git is not None
    with pytest.raises(InvalidInput):
        ctx.git.publish("run1", {"versions/x.json": "{}"}, value, "message")
    if value != "$(id)":  # a file may be named "$(id)": git gets paths as arguments, no shell
        with pytest.raises(InvalidInput):
            ctx.git.publish("run1", {value: "{}"}, "tag-1", "message")
    assert registry.seen == []  # nothing reached the registry
    assert (
        subprocess.run(
            ["git", "--git-dir", str(remote), "rev-parse", "--verify", "-q", "main"],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    )  # nothing reached git


@pytest.mark.parametrize(
    ("field", "value"),
    [("dockerfile", "../../etc/passwd"), ("test", "/etc/shadow"), ("dockerfile", "a\nb")],
)
def test_paths_in_image_definitions_must_stay_inside_their_folder(
    tmp_path: Path, field: str, value: str
) -> None:
    from shared.definitions import load_definition

    folder = define_quick(
        tmp_path, "evil", "http://127.0.0.1:9/pypi", "127.0.0.1:5000/a/b:1", "a/b"
    )
    toml = folder / "image.toml"
    toml.write_text(toml.read_text() + f"\n[files]\n{field} = {value!r}\n".replace("'", '"'))
    with pytest.raises(ConfigError, match=f"files.{field}"):
        load_definition(folder)


def test_a_hostile_pypi_version_never_becomes_a_build_argument(
    tmp_path: Path, redis_url: str
) -> None:
    with PyPIServer() as pypi:
        define_quick(tmp_path / "images", "up", pypi.index, "127.0.0.1:5000/a/b:1", "a/b")
        pypi.set_releases("up", ["1.0; rm -rf /", "../../etc", "1.0\nlatest"])
        system = System(
            "hostile-pypi",
            {"FRESHEN_REDIS_URL": redis_url, "FRESHEN_IMAGES_DIR": str(tmp_path / "images")},
        )
        try:
            with pytest.raises(Exception, match="no usable release") as caught:
                read_upstream(system.ctx, system.ctx.definition("up"), None)
        finally:
            system.close()
    assert "not PEP 440" in str(caught.value)


def test_oversized_and_control_character_values_are_quoted_safely() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse("a" * 10_000)
    assert len(str(caught.value)) < 200
    with pytest.raises(InvalidInput) as caught:
        validate.tag("ok\x1b[31mred")
    assert "\\x1b" in str(caught.value)
