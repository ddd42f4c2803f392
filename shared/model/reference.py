"""Image references (`[host/]repo[:tag][@digest]`), normalized the way the Docker Engine does."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import InvalidInput
from shared.model import validate

DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageRef:
    """A validated reference; `registry` is the API host (Docker Hub's is registry-1.docker.io)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The reference the Docker Engine is given, without tag or digest."""
        if self.registry == DOCKER_HUB_API:
            short = self.repository.removeprefix("library/")
            return short if short != self.repository else f"docker.io/{self.repository}"
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """The tag or digest to ask the registry for (the digest wins)."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        """`name@digest`: what a Dockerfile's FROM gets so the base cannot move under a build."""
        return f"{self.name}@{validate.digest(digest)}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse(value: str) -> ImageRef:
    """Parse and validate a reference; raise InvalidInput naming what is wrong."""
    if not isinstance(value, str) or not value or len(value) > validate.MAX_VALUE_LENGTH:
        raise InvalidInput(f"invalid image reference: {value!r:.80}")
    rest, _, digest = value.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB_API, rest
    path, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if registry in DOCKER_HUB_NAMES:
        registry = DOCKER_HUB_API
    if registry == DOCKER_HUB_API and "/" not in path:
        path = f"library/{path}"
    return ImageRef(
        registry=validate.registry_host(registry),
        repository=validate.repository(path),
        tag=validate.tag(tag) if colon else None,
        digest=validate.digest(digest) if digest else None,
    )
