"""Installed Python distributions read from an image's file system as a tar stream (what the
Engine API's container export sends), without running anything in the image."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator

from shared.vulns import Installed, is_metadata_file, parse_metadata, unique

# Largest metadata file read; real ones are a few kB to a few hundred (long descriptions).
MAX_METADATA_BYTES = 4 * 1024 * 1024


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
