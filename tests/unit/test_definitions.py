"""Definition folders are a boundary: one target repository per image, and the Dockerfile and
test script regular files inside the folder whenever they are used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.definitions import load_definitions
from shared.errors import ConfigError

pytestmark = pytest.mark.timeout(10)


def define(images: Path, name: str, repository: str) -> Path:
    folder = images / name
    folder.mkdir(parents=True)
    (folder / "image.toml").write_text(
        f'[source]\npypi = "{name}"\n[base]\nimage = "python:3-alpine"\n'
        f'[target]\nrepository = "{repository}"\n'
    )
    (folder / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (folder / "test.sh").write_text("exit 0\n")
    return folder


def test_two_definitions_may_not_share_a_target_repository(tmp_path: Path) -> None:
    define(tmp_path, "one", "org/tool")
    define(tmp_path, "two", "org/tool")
    with pytest.raises(ConfigError, match="'org/tool' is also the target of image 'one'"):
        load_definitions(tmp_path)


def test_a_file_swapped_for_a_link_after_start_up_is_refused_when_used(tmp_path: Path) -> None:
    folder = define(tmp_path, "tool", "org/tool")
    definition = load_definitions(tmp_path)["tool"]
    assert definition.test_script == folder / "test.sh"
    (folder / "test.sh").unlink()
    os.symlink("/etc/passwd", folder / "test.sh")
    with pytest.raises(ConfigError, match=r"files.test: 'test.sh' is not a file inside"):
        _ = definition.test_script
    (folder / "Dockerfile").unlink()
    (folder / "real").write_text("FROM x\n")
    os.symlink(folder / "real", folder / "Dockerfile")  # inside, but a link
    with pytest.raises(ConfigError, match=r"files\.dockerfile: 'Dockerfile' is a symbolic link"):
        _ = definition.dockerfile
