"""Checks that run before any value reaches Docker, a registry, git or a build argument."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from shared.errors import InvalidInput

MAX_VALUE_LENGTH = 255
# Image definition names: a folder name, also used in Redis keys and git paths.
_IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# OCI distribution spec: tags and repository path components.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*")
_HOST = re.compile(
    r"(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?"
)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_PROJECT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")


def _short(value: str) -> str:
    """A value safe to quote in an error message: bounded length, control characters shown."""
    return repr(value[:80] + ("…" if len(value) > 80 else ""))


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH or not pattern.fullmatch(value):
        shown = _short(value) if isinstance(value, str) else type(value).__name__
        raise InvalidInput(f"invalid {what}: {shown}")
    return value


def image_name(value: object) -> str:
    """An image definition's name: lower-case letters, digits, '.', '_' and '-'."""
    return _check(_IMAGE_NAME, value, "image name")


def tag(value: object) -> str:
    """An OCI tag."""
    return _check(_TAG, value, "tag")


def repository(value: object) -> str:
    """An OCI repository path without its registry host, e.g. 'library/python'."""
    return _check(_REPOSITORY, value, "repository")


def registry_host(value: object) -> str:
    """A registry host with an optional port."""
    return _check(_HOST, value, "registry host")


def digest(value: object) -> str:
    """A sha256 content digest."""
    return _check(_DIGEST, value, "digest")


def pypi_project(value: object) -> str:
    """A PyPI project name."""
    return _check(_PROJECT, value, "PyPI project name")


def version(value: object) -> Version:
    """A PEP 440 version; callers use its normalized str(), never the raw input."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"not a PEP 440 version: {_short(str(value))}")
    try:
        parsed = Version(value)
    except InvalidVersion:
        raise InvalidInput(f"not a PEP 440 version: {_short(value)}") from None
    return parsed


def release(value: object) -> Version:
    """A PEP 440 version fit for a build argument and an OCI tag: no epoch, no local part."""
    parsed = version(value)
    if parsed.epoch or parsed.local:
        raise InvalidInput(
            f"version {str(parsed)!r} has an epoch or local part; it cannot be a tag"
        )
    return parsed
