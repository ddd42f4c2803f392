"""Image definitions: `images/<name>/image.toml` plus its Dockerfile and test script.

Everything specific to one watched image lives in its folder; adding an image is adding a folder.
A broken definition is a DefinitionError naming the file and the field; shared/catalog.py keeps
the definitions of a running process current and sets broken folders aside.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigError, InvalidInput
from shared.model import reference, releaseage, validate

DEFINITION_FILE = "image.toml"
# What an ignored vulnerability id may look like (PYSEC-2023-228, GHSA-mq26-g339-26xf, CVE-…).
_VULN_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+){1,6}")


class DefinitionError(ConfigError):
    """A broken definition folder: which file, which fields ("" when no field is to blame), and
    a message that names them."""

    def __init__(self, file: Path, field: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file, self.field, self.message = file, field, message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SourceSection(_Strict):
    pypi: str
    """PyPI project whose releases are watched."""
    index: str = "https://pypi.org/pypi"
    """Root of a PyPI-compatible JSON API (`<index>/<project>/json`)."""
    prereleases: bool = False
    """Also build pre-releases (a, b, rc, dev)."""
    min_release_age: Annotated[timedelta, BeforeValidator(releaseage.parse_duration)] = timedelta(0)
    """Build a release only once it was uploaded this long ago ("3d", "12h", ISO 8601 or
    seconds); a younger one waits (status says until when). 0: off."""

    @property
    def min_release_age_s(self) -> float:
        return self.min_release_age.total_seconds()

    @field_validator("pypi")
    @classmethod
    def _project(cls, value: str) -> str:
        return validate.pypi_project(value)

    @field_validator("index")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


class BaseSection(_Strict):
    image: str
    """Base image reference (`python:3-alpine`); its digest is watched and pinned in builds."""

    @field_validator("image")
    @classmethod
    def _reference(cls, value: str) -> str:
        reference.parse(value)
        return value


class TargetSection(_Strict):
    repository: str
    """Repository under the push registry that develop and release tags go to."""
    latest: bool = True
    """Keep a `latest` tag (only ever moves forward)."""
    minor: bool = True
    """Keep an `X.Y` tag (only ever moves forward)."""
    os: bool = True
    """Add `X.Y.Z-<os><os version>`, the OS version read from the built image."""
    source: str = ""
    """URL for the org.opencontainers.image.source label."""

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        return validate.repository(value)


class FilesSection(_Strict):
    dockerfile: str = "Dockerfile"
    """Dockerfile, relative to the definition's folder (the build context)."""
    test: str = "test.sh"
    """Test script run inside the candidate with `sh`; relative to the folder."""


class IgnoredVulnerability(_Strict):
    id: str
    """A vulnerability id as the index reports it (PYSEC-…, GHSA-…) or an alias (CVE-…)."""
    reason: str
    """Why it does not apply to this image; required, shown in status and in the event."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _VULN_ID.fullmatch(value):
            raise ValueError("must be a vulnerability id such as PYSEC-2023-228 or CVE-2023-5752")
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give the reason this vulnerability does not apply to the image")
        return value.strip()


class VulnerabilitiesSection(_Strict):
    policy: Literal["block", "warn", "off"] = "block"
    """What a known vulnerability of an installed distribution does before promotion: `block`
    (not promoted; also when the data cannot be read), `warn` (promoted, recorded), `off`."""
    ignore: list[IgnoredVulnerability] = Field(default_factory=list)
    """Ids that do not apply to this image, each with its reason."""

    @field_validator("ignore")
    @classmethod
    def _unique(cls, value: list[IgnoredVulnerability]) -> list[IgnoredVulnerability]:
        ids = [v.id.upper() for v in value]
        if twice := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"ignored more than once: {', '.join(twice)}")
        return value


class DefinitionFile(_Strict):
    source: SourceSection
    base: BaseSection
    target: TargetSection
    files: FilesSection = Field(default_factory=FilesSection)
    vulnerabilities: VulnerabilitiesSection = Field(default_factory=VulnerabilitiesSection)


@dataclass(frozen=True)
class ImageDefinition:
    """One watched image, validated."""

    name: str
    folder: Path
    spec: DefinitionFile

    @property
    def base(self) -> reference.ImageRef:
        return reference.parse(self.spec.base.image)

    @property
    def dockerfile(self) -> Path:
        """The Dockerfile, checked now (it may have changed since start-up)."""
        return _inside(self.folder, self.spec.files.dockerfile, "files.dockerfile")

    @property
    def test_script(self) -> Path:
        """The test script, checked now (it may have changed since start-up)."""
        return _inside(self.folder, self.spec.files.test, "files.test")


def _inside(folder: Path, relative: str, field: str) -> Path:
    """`folder/relative` if it is a regular file inside `folder` (no symbolic link on the way
    out of it); a DefinitionError naming the definition and the field otherwise."""
    path = folder / relative
    target = path.resolve()
    where = folder / DEFINITION_FILE
    if not target.is_relative_to(folder.resolve()) or not target.is_file():
        raise DefinitionError(where, field, f"{field}: {relative!r} is not a file inside {folder}")
    if any(p.is_symlink() for p in (path, *path.parents) if p.is_relative_to(folder)):
        raise DefinitionError(
            where, field, f"{field}: {relative!r} is a symbolic link; copy the file in"
        )
    return path


def load_definition(folder: Path) -> ImageDefinition:
    """Load and validate one definition folder."""
    path = folder / DEFINITION_FILE
    try:
        name = validate.image_name(folder.name)
    except InvalidInput as exc:
        raise DefinitionError(folder, "", f"folder name is not a valid image name: {exc}") from None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError(path, "", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(path, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise DefinitionError(path, "", "not UTF-8 text") from None
    try:
        spec = DefinitionFile.model_validate(raw)
    except ValidationError as exc:
        fields = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        problems = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, exc.errors(), strict=True))
        raise DefinitionError(path, ", ".join(dict.fromkeys(fields)), problems) from None
    definition = ImageDefinition(name=name, folder=folder, spec=spec)
    _ = definition.dockerfile, definition.test_script  # checked at start-up and at each use
    return definition


def load_definitions(images_dir: Path) -> dict[str, ImageDefinition]:
    """Every definition under `images_dir`, by name; any broken one is an error."""
    if not images_dir.is_dir():
        raise ConfigError(f"images folder {images_dir} does not exist (setting FRESHEN_IMAGES_DIR)")
    folders = sorted(p for p in images_dir.iterdir() if (p / DEFINITION_FILE).is_file())
    definitions = {d.name: d for d in (load_definition(f) for f in folders)}
    owners: dict[str, str] = {}
    for name, definition in definitions.items():
        repository = definition.spec.target.repository
        if repository in owners:
            raise ConfigError(
                f"{definition.folder / DEFINITION_FILE}: target.repository {repository!r} is "
                f"also the target of image {owners[repository]!r}; each image needs its own"
            )
        owners[repository] = name
    return definitions
