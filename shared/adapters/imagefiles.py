"""What freshen reads from an image's files as tar streams (the Engine API's container export
and archive answers), without running anything in the image: its installed Python distributions
and the OS release it reports."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping

from shared.errors import StageError
from shared.model.vulns import Installed, is_metadata_file, parse_metadata, unique

# Largest metadata file read; real ones are a few kB to a few hundred (long descriptions).
MAX_METADATA_BYTES = 4 * 1024 * 1024
# The files an image reports its OS in: os-release (the first found of the two), and the exact
# release of Alpine and Debian, which VERSION_ID gives only in part.
OS_RELEASE, OS_RELEASE_FALLBACK = "/etc/os-release", "/usr/lib/os-release"
ALPINE_RELEASE, DEBIAN_VERSION = "/etc/alpine-release", "/etc/debian_version"
OS_RELEASE_FILES = (OS_RELEASE, OS_RELEASE_FALLBACK, ALPINE_RELEASE, DEBIAN_VERSION)
# Largest OS release file read; real ones are a few hundred bytes.
MAX_OS_FILE_BYTES = 64 * 1024
_OS_ID = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")
_OS_VERSION = re.compile(r"[0-9][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)*")


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks (the Engine's streamed answer)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def read_distributions(chunks: Iterable[bytes]) -> list[Installed]:
    """Every distribution whose metadata the tar stream holds (see vulns.is_metadata_file),
    one per (name, version). Links are not followed: the image's own files only."""
    found = []
    stream = io.BufferedReader(_ChunkReader(chunks), buffer_size=1024 * 1024)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not member.isfile() or member.size > MAX_METADATA_BYTES:
                continue
            if not is_metadata_file(member.name):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            text = handle.read().decode("utf-8", errors="replace")
            installed = parse_metadata(text, "/" + member.name.removeprefix("./").lstrip("/"))
            if installed is not None:
                found.append(installed)
    return unique(found)


def read_small_file(chunks: Iterable[bytes]) -> str:
    """The text of the one regular file an archive answer of a file path holds; "" when the path
    is not a regular file (a folder, a device) or is larger than MAX_OS_FILE_BYTES."""
    stream = io.BufferedReader(_ChunkReader(chunks))
    text = ""
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        first = next(iter(archive), None)
        if first is not None and first.isfile() and first.size <= MAX_OS_FILE_BYTES:
            handle = archive.extractfile(first)
            text = handle.read().decode("utf-8", errors="replace") if handle else ""
        for _ in archive:  # to the end, so the Engine's connection is reused
            pass
    return text


def parse_os_release(files: Mapping[str, str], image: str) -> tuple[str, str]:
    """(id, version) from the OS_RELEASE_FILES' texts ("" for a missing one); both safe in a
    tag suffix."""
    fields: dict[str, str] = {}
    for line in (files.get(OS_RELEASE) or files.get(OS_RELEASE_FALLBACK, "")).splitlines():
        key, eq, value = line.strip().partition("=")
        if eq:
            fields[key] = value.strip().strip("\"'")
    os_id, version = fields.get("ID", "").lower(), fields.get("VERSION_ID", "")
    alpine, debian = files.get(ALPINE_RELEASE, "").strip(), files.get(DEBIAN_VERSION, "").strip()
    if os_id == "alpine" and alpine:
        version = alpine
    elif os_id == "debian" and re.fullmatch(r"\d+(?:\.\d+)+", debian):
        version = debian
    if not (_OS_ID.fullmatch(os_id) and _OS_VERSION.fullmatch(version) and len(version) < 32):
        raise StageError(
            image,
            "build",
            f"cannot tell the OS of the built image (ID={os_id[:40]!r}, version={version[:40]!r});"
            " set target.os = false in image.toml or use a base with /etc/os-release",
        )
    return os_id, version
