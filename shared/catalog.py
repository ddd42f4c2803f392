"""The image definitions of a running process, kept current with the images folder.

Beat and workers read definitions through a Catalog, never a copy taken at start-up: each read
compares a folder's fingerprint (a stat of the folder and of its image.toml; nothing is read)
with the one it loaded, and parses again only a folder that changed. Adding, changing or
removing a folder so takes effect at the next use, without a restart. A broken folder is set
aside with its DefinitionError (file and field); every other image goes on. Two folders with
one target repository: the one whose image.toml changed last is the broken one (the other was
there first and keeps running); its error names both.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from shared.definitions import DEFINITION_FILE, DefinitionError, ImageDefinition, load_definition
from shared.errors import ConfigError, InvalidInput
from shared.model import validate

log = logging.getLogger(__name__)

# What a folder's definition was loaded from: folder mtime (files added, removed, renamed),
# then image.toml's mtime, size, inode and ctime (edited in place or replaced).
Fingerprint = tuple[int, int, int, int, int]


def fingerprint(folder: Path) -> Fingerprint | None:
    """The folder's fingerprint; None when it holds no image.toml (or is gone)."""
    try:
        toml = os.stat(folder / DEFINITION_FILE)
        here = os.stat(folder)
    except OSError:
        return None
    return (here.st_mtime_ns, toml.st_mtime_ns, toml.st_size, toml.st_ino, toml.st_ctime_ns)


def image_names(images_dir: Path) -> list[str]:
    """Sorted names of the folders holding an image.toml whose names are valid image names
    (a folder with another name is logged: it cannot be an image's event stream)."""
    if not images_dir.is_dir():
        raise ConfigError(f"images folder {images_dir} does not exist (setting FRESHEN_IMAGES_DIR)")
    names = []
    with os.scandir(images_dir) as entries:
        for entry in entries:
            if not os.path.isfile(os.path.join(entry.path, DEFINITION_FILE)):
                continue
            try:
                names.append(validate.image_name(entry.name))
            except InvalidInput as exc:
                log.error("%s: folder name is not a valid image name: %s", entry.path, exc)
    return sorted(names)


@dataclass(frozen=True)
class Loaded:
    """One folder as last loaded: its fingerprint then, and its definition or its error."""

    fingerprint: Fingerprint
    definition: ImageDefinition | None = None
    error: DefinitionError | None = None


def load(folder: Path, print_: Fingerprint) -> Loaded:
    try:
        return Loaded(print_, definition=load_definition(folder))
    except DefinitionError as exc:
        return Loaded(print_, error=exc)


def resolve(
    loaded: dict[str, Loaded],
) -> tuple[dict[str, ImageDefinition], dict[str, DefinitionError]]:
    """(valid definitions, image → its error): a folder whose target repository another
    folder already has is broken, the one whose image.toml changed last (then by name)."""
    valid: dict[str, ImageDefinition] = {}
    errors = {name: item.error for name, item in loaded.items() if item.error is not None}
    owners: dict[str, ImageDefinition] = {}
    fine = [(item.fingerprint[1], name, item.definition) for name, item in loaded.items()]
    for _, name, definition in sorted((f for f in fine if f[2]), key=lambda f: f[:2]):
        assert definition is not None
        repository = definition.spec.target.repository
        if owner := owners.get(repository):
            errors[name] = DefinitionError(
                definition.folder / DEFINITION_FILE,
                "target.repository",
                f"target.repository {repository!r} is also the target of image {owner.name!r} "
                f"({owner.folder / DEFINITION_FILE}); each image needs its own: change one of them",
            )
            continue
        owners[repository] = definition
        valid[name] = definition
    return valid, errors


class Catalog:
    """The definitions under one images folder, reloaded per folder when it changes."""

    def __init__(self, images_dir: Path) -> None:
        image_names(images_dir)  # a missing images folder is a settings error: stop at start
        self.images_dir = images_dir
        self._loaded: dict[str, Loaded] = {}
        self._valid: dict[str, ImageDefinition] = {}
        self._errors: dict[str, DefinitionError] = {}
        self.refresh()

    def refresh(self) -> None:
        """Stat every folder; parse those that changed; resolve shared repositories again."""
        try:
            names = image_names(self.images_dir)
        except (OSError, ConfigError) as exc:  # the folder went away: no image meanwhile
            log.error("images folder %s unreadable: %s", self.images_dir, exc)
            names = []
        current: dict[str, Loaded] = {}
        for name in names:
            folder = self.images_dir / name
            print_ = fingerprint(folder)
            if print_ is None:
                continue  # removed between the listing and now
            old = self._loaded.get(name)
            current[name] = old if old and old.fingerprint == print_ else load(folder, print_)
        if current != self._loaded:
            self._loaded = current
            self._valid, self._errors = resolve(current)

    def definitions(self) -> dict[str, ImageDefinition]:
        """The valid definitions now, by name."""
        self.refresh()
        return dict(self._valid)

    def errors(self) -> dict[str, DefinitionError]:
        """The broken folders now: image → error naming the file and the field."""
        self.refresh()
        return dict(self._errors)

    def lookup(self, name: str) -> ImageDefinition | DefinitionError | None:
        """`name`'s definition, its error, or None when no folder defines it. Stats
        only its folder unless that changed (or it lost a shared repository: the other folder
        may be gone)."""
        print_ = fingerprint(self.images_dir / name)
        old = self._loaded.get(name)
        if print_ is None and old is None:
            return None
        if old is None or old.fingerprint != print_ or name in self._errors:
            self.refresh()
        return self._valid.get(name) or self._errors.get(name)
