"""Definitions picked up live: the catalog follows the images folder, reloads only what changed,
sets a broken folder aside with its file and field, and keeps every other image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared import catalog as catalog_module
from shared.catalog import Catalog, image_names
from shared.definitions import DefinitionError, ImageDefinition, load_definition
from shared.errors import ConfigError
from shared.model.aggregate import ImageState, fold
from shared.model.eventcodec import decode, encode
from shared.model.events import DefinitionInvalid, DefinitionRepaired, Event, Recorded
from shared.stages.check import repaired

pytestmark = pytest.mark.timeout(10)


def define(images: Path, name: str, repository: str, pypi: str | None = None) -> Path:
    folder = images / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image.toml").write_text(
        f'[source]\npypi = "{pypi or name}"\n[base]\nimage = "python:3-alpine"\n'
        f'[target]\nrepository = "{repository}"\n'
    )
    (folder / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (folder / "test.sh").write_text("exit 0\n")
    return folder


def touch_later(path: Path, seconds: int) -> None:
    """Set the file's mtime `seconds` later than now (deterministic order of changes)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def test_folders_added_changed_and_removed_take_effect_at_the_next_read(tmp_path: Path) -> None:
    define(tmp_path, "one", "org/one")
    catalog = Catalog(tmp_path)
    assert list(catalog.definitions()) == ["one"]
    define(tmp_path, "two", "org/two")
    assert sorted(catalog.definitions()) == ["one", "two"]
    define(tmp_path, "two", "org/two", pypi="httpie")
    assert catalog.definitions()["two"].spec.source.pypi == "httpie"
    found = catalog.lookup("two")
    assert not isinstance(found, DefinitionError) and found is not None
    assert found.spec.source.pypi == "httpie"
    (tmp_path / "two" / "image.toml").unlink()
    assert list(catalog.definitions()) == ["one"]
    assert catalog.lookup("two") is None


def test_an_unchanged_folder_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    define(tmp_path, "one", "org/one")
    define(tmp_path, "two", "org/two")
    parsed: list[str] = []
    real = load_definition

    def counted(folder: Path) -> ImageDefinition:
        parsed.append(folder.name)
        return real(folder)

    monkeypatch.setattr(catalog_module, "load_definition", counted)
    catalog = Catalog(tmp_path)
    assert sorted(parsed) == ["one", "two"]
    for _ in range(5):
        catalog.definitions()
        catalog.lookup("one")
    assert sorted(parsed) == ["one", "two"]
    define(tmp_path, "two", "org/two", pypi="httpie")
    catalog.lookup("one")  # a look-up stats only its own folder
    assert sorted(parsed) == ["one", "two"]
    catalog.lookup("two")
    assert sorted(parsed) == ["one", "two", "two"]


@pytest.mark.parametrize(
    ("breakage", "file", "field", "words"),
    [
        ("toml", "image.toml", "", "not valid TOML"),
        ("field", "image.toml", "target.repository", "target.repository"),
        ("dockerfile", "image.toml", "files.dockerfile", "'Dockerfile' is not a file"),
    ],
)
def test_a_broken_folder_is_set_aside_with_its_file_and_field(
    tmp_path: Path, breakage: str, file: str, field: str, words: str
) -> None:
    define(tmp_path, "one", "org/one")
    folder = define(tmp_path, "two", "org/two")
    catalog = Catalog(tmp_path)
    toml = folder / "image.toml"
    if breakage == "toml":
        toml.write_text(toml.read_text().replace("[target]", "[target"))
    elif breakage == "field":
        toml.write_text(toml.read_text().replace('"org/two"', '"Org Two!"'))
    else:
        (folder / "Dockerfile").unlink()
    error = catalog.lookup("two")
    assert isinstance(error, DefinitionError)
    assert error.file == toml and error.field == field and words in str(error)
    assert str(toml) in str(error)
    assert list(catalog.definitions()) == ["one"]
    assert list(catalog.errors()) == ["two"]
    define(tmp_path, "two", "org/two")  # fixed
    assert sorted(catalog.definitions()) == ["one", "two"] and not catalog.errors()


def test_start_up_survives_a_broken_folder(tmp_path: Path) -> None:
    define(tmp_path, "one", "org/one")
    (define(tmp_path, "two", "org/two") / "image.toml").write_text("not = [toml")
    catalog = Catalog(tmp_path)
    assert list(catalog.definitions()) == ["one"] and list(catalog.errors()) == ["two"]


def test_of_two_folders_sharing_a_repository_the_newer_is_broken(tmp_path: Path) -> None:
    define(tmp_path, "zeta", "org/tool")
    catalog = Catalog(tmp_path)
    touch_later(define(tmp_path, "alpha", "org/tool") / "image.toml", 5)
    error = catalog.lookup("alpha")
    assert isinstance(error, DefinitionError) and error.field == "target.repository"
    assert "'org/tool' is also the target of image 'zeta'" in str(error)
    assert str(tmp_path / "zeta" / "image.toml") in str(error)
    assert list(catalog.definitions()) == ["zeta"]
    (tmp_path / "zeta" / "image.toml").unlink()  # the older one goes: the newer one runs
    assert not isinstance(catalog.lookup("alpha"), DefinitionError)


def test_folders_whose_names_cannot_be_images_are_not_listed(tmp_path: Path) -> None:
    define(tmp_path, "one", "org/one")
    define(tmp_path, "Bad Name", "org/bad")
    (tmp_path / "notes").mkdir()
    assert image_names(tmp_path) == ["one"]


def test_a_missing_images_folder_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FRESHEN_IMAGES_DIR"):
        Catalog(tmp_path / "absent")


def test_the_log_shows_a_broken_definition_until_repaired() -> None:
    invalid = DefinitionInvalid("/images/two/image.toml", "target.repository", "two: broken")
    events: list[Event] = [invalid, DefinitionRepaired()]
    records = [decode(encode("two", i, "2026-12-01T00:00:00Z", e)) for i, e in enumerate(events)]
    assert records[0] == Recorded("two", 0, "2026-12-01T00:00:00Z", invalid)
    state = fold("two", records[:1])
    assert state.definition_error == "two: broken"
    assert repaired(state) == [DefinitionRepaired()]
    assert fold("two", records).definition_error == ""
    assert repaired(ImageState("two")) == []
