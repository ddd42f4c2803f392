"""What freshen asks of the Docker Engine: build and push a candidate, read the OS an image is
built on and the Python distributions installed in it, and run an image's test script in a
throw-away container. With it, and only with it, speak to the Engine: containers.py (creating,
running and removing containers), testenv.py (the test's network and moto) and engineerrors.py
(how Engine errors are sorted), all in shared/adapters. Credentials and test environment values
never reach a message.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import docker
import requests
from docker.errors import DockerException, ImageNotFound, NotFound

from shared.adapters.containeroutput import StepLog, TestOutcome
from shared.adapters.containers import Containers
from shared.adapters.engineerrors import API_TIMEOUT_S, engine_errors, follow
from shared.adapters.imagefiles import (
    OS_RELEASE_FILES,
    parse_os_release,
    read_distributions,
    read_small_file,
)
from shared.adapters.testenv import Placements, script_archive
from shared.config import Settings
from shared.constants import (
    BUILD_ARG_BASE,
    BUILD_ARG_VERSION,
    DEVELOP_TAG,
    MANAGED_LABEL,
    TEST_SCRIPT_PATH,
)
from shared.definitions import ImageDefinition
from shared.errors import InvalidInput, StageError, TransientError
from shared.model import reference, validate
from shared.model.vulns import Installed

log = logging.getLogger(__name__)

__all__ = ["MANAGED_LABEL", "Engine"]
# Build options: no leftover build containers; the base is pulled beforehand by digest, so the
# build need not pull. (The network is the build_network setting, never the host's.)
_BUILD_OPTIONS = dict(rm=True, forcerm=True, pull=False, decode=True)
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class Engine:
    """Docker Engine client; build one per worker process and pass it in."""

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        self._settings = settings
        self._owns_client = client is None
        if client is None:
            try:
                client = docker.from_env(timeout=API_TIMEOUT_S)
            except DockerException as exc:
                raise TransientError(
                    f"Docker Engine unreachable ({type(exc).__name__}); start it or fix DOCKER_HOST"
                ) from None
        self._client = client
        self._places = Placements(client.api, settings)
        self._containers = Containers(client.api)

    def close(self) -> None:
        """Close the SDK client if this Engine made it."""
        if self._owns_client:
            self._client.close()

    def build_and_push(
        self,
        definition: ImageDefinition,
        version: str,
        base_pinned: str,
        target: str,
        labels: Mapping[str, str],
        tag: str,
    ) -> str:
        """Build `target:tag` on the pinned base, push it, return the pushed manifest digest.

        `tag` is the run's own candidate tag: builds of other runs on this engine never touch
        it, so the digest returned is this build's. The local tag is dropped after the push
        (the digest is what later stages use)."""
        name = definition.name
        base = reference.parse(base_pinned)
        bare = reference.parse(target)
        if base.digest is None or bare.tag is not None or bare.digest is not None:
            raise InvalidInput(f"{name}: base must be pinned by digest, target bare: {target!r}")
        # Pulled here (unless the engine has it), not by the build, so credentials and registry
        # errors are handled alike; the build then finds this exact name locally.
        if self._local_id([base_pinned], name, "build") is None:
            self._pull(base_pinned, name, "build")
        build_args = {BUILD_ARG_VERSION: str(validate.version(version)), BUILD_ARG_BASE: str(base)}
        _ = definition.dockerfile  # still a regular file inside the folder, now
        with engine_errors(name, "build", f"building {definition.spec.files.dockerfile}"):
            stream = self._client.api.build(
                path=str(definition.folder),
                dockerfile=definition.spec.files.dockerfile,
                tag=f"{target}:{validate.tag(tag)}",
                buildargs=build_args,
                labels=dict(labels),
                timeout=self._settings.build_time_limit_s,
                network_mode=self._settings.build_network,
                **_BUILD_OPTIONS,
            )
            follow(stream, name, "build", f"building {definition.spec.files.dockerfile}")
        digest = self._push(target, tag, name)
        # Locally, `develop` names this engine's last build and the run's own tag goes, so an
        # engine keeps one local name per target however many runs it builds.
        with suppress(DockerException):
            self._client.api.tag(f"{target}:{tag}", target, DEVELOP_TAG, force=True)
            self._client.api.remove_image(f"{target}:{tag}", noprune=True)
        log.info("%s: pushed %s:%s as %s", name, target, tag, digest)
        return digest

    def read_os(self, image: str) -> tuple[str, str]:
        """(os id, os version) as the image's own files report them, e.g. ("alpine", "3.22.2"),
        read from a container that is created, never started, and removed."""
        who = reference.parse(image).name  # errors name the image without tag or digest
        local = self.ensure_image(image, "build")
        reading = engine_errors(who, "build", "reading the OS release")
        with reading, self._unstarted(local, "build") as box:
            files = {path: self._read_text(box, path) for path in OS_RELEASE_FILES}
        return parse_os_release(files, who)

    def run_test(
        self,
        image: str,
        script: Path,
        env: Mapping[str, str],
        timeout_s: float,
        name: str,
        secret_files: Mapping[str, bytes] | None = None,
    ) -> TestOutcome:
        """Run `sh script` inside `image` (pulled by digest) with only `env` (and, in moto mode,
        AWS_ENDPOINT_URL naming the test's own moto) and `secret_files` copied in (never in
        its configuration); always clean up."""
        who = reference.parse(image).name
        if not _CONTAINER_NAME.fullmatch(name) or timeout_s <= 0:
            raise InvalidInput(f"{who}: bad test container name {name!r} or timeout {timeout_s}")
        try:
            archive = script_archive(script.read_bytes(), secret_files)
        except OSError as exc:
            raise StageError(who, "test", f"cannot read {script}: {exc.strerror}") from None
        local = self.ensure_image(image, "test")
        # One stream: the engine keeps stdout and stderr apart and may interleave them out of order.
        entrypoint = ["sh", "-c", 'exec sh "$0" 2>&1', TEST_SCRIPT_PATH]
        steps = StepLog(self._settings.test_output_tail_lines)
        with engine_errors(who, "test", "replacing a leftover container"), suppress(NotFound):
            # stopped first: its clean-up trap still reaches its moto
            self._containers.remove_stale(name)
        places = self._places.place(who, name)
        with engine_errors(who, "test", "preparing the test network"), places as place:
            environment = dict(env) | place.environment
            create = {"entrypoint": entrypoint, "environment": environment, "name": name}
            create["network_mode"] = place.network
            exit_code = self._containers.run(local, who, "test", create, timeout_s, steps, archive)
        log.info("%s: test container %s exited %s", who, name, exit_code)
        return steps.outcome(exit_code)

    def installed_distributions(self, image: str) -> list[Installed]:
        """The Python distributions installed anywhere in `image` (pulled by digest unless the
        engine has it), read from its files through a container that is never started."""
        who = reference.parse(image).name
        local = self.ensure_image(image, "test")
        reading = engine_errors(who, "test", "reading the image's Python distributions")
        with reading, self._unstarted(local, "test") as container:
            try:
                return read_distributions(self._client.api.export(container))
            except (tarfile.TarError, requests.exceptions.RequestException) as exc:
                why = type(exc).__name__
                raise TransientError(
                    f"{who}: test: reading the image's files failed ({why})"
                ) from None

    def ensure_image(self, image: str, stage: str) -> str:
        """What this engine creates `image` from: the local image holding its digest (built or
        pulled here before, under the pull or the push registry's name; a digest names one
        content, so the local copy is it), or else `image`, pulled first."""
        ref = reference.parse(image)
        names = [image]
        if ref.digest is not None:
            ours = {self._settings.push_registry, self._settings.pull_registry} - {ref.registry}
            names += sorted(f"{r}/{ref.repository}@{ref.digest}" for r in ours if r)
        local = self._local_id(names, ref.name, stage)
        if local is None:
            self._pull(image, ref.name, stage)
        return local or image

    def _local_id(self, names: list[str], who: str, stage: str) -> str | None:
        """The id of the local image first found under one of `names`; None if none is here."""
        with engine_errors(who, stage, "inspecting local images"):
            for name in names:
                with suppress(ImageNotFound):
                    return str(self._client.api.inspect_image(name)["Id"])
        return None

    @contextmanager
    def _unstarted(self, image: str, stage: str) -> Iterator[str]:
        """A container of `image` that is never started (its files are read), then removed."""
        args = {"entrypoint": ["true"], "labels": {MANAGED_LABEL: stage}}
        args["host_config"] = self._client.api.create_host_config(network_mode="none")
        container = self._containers.create(image, args)
        try:
            yield container
        finally:
            self._containers.remove(container)

    def _read_text(self, container: str, path: str) -> str:
        """A small text file of the container ("" when missing), its symbolic link followed
        (the engine resolves the link inside the container's root)."""
        try:
            chunks, stat = self._client.api.get_archive(container, path)
            if stat.get("linkTarget"):
                for _ in chunks:  # the link itself: read, so its connection is reused
                    pass
                chunks, _ = self._client.api.get_archive(container, stat["linkTarget"])
        except NotFound:
            return ""
        return read_small_file(chunks)

    def _auth(self, image: str) -> dict[str, str] | None:
        """Credentials for `image` when it lives on the push registry and some are configured."""
        s = self._settings
        if reference.parse(image).registry != s.push_registry or not s.registry_username:
            return None
        password = s.registry_password.get_secret_value() if s.registry_password else ""
        return {"username": s.registry_username, "password": password}

    def _pull(self, image: str, who: str, stage: str) -> None:
        with engine_errors(who, stage, f"pulling {image}"):
            stream = self._client.api.pull(
                image, stream=True, decode=True, auth_config=self._auth(image)
            )
            follow(stream, who, stage, f"pulling {image}")

    def _push(self, target: str, tag: str, who: str) -> str:
        doing = f"pushing {target}:{tag}"
        with engine_errors(who, "build", doing):
            stream = self._client.api.push(
                target, tag=tag, stream=True, decode=True, auth_config=self._auth(target)
            )
            aux = follow(stream, who, "build", doing)
        digests = [a["Digest"] for a in aux if isinstance(a, dict) and "Digest" in a]
        try:
            return validate.digest(digests[-1] if digests else None)
        except InvalidInput as exc:
            raise StageError(who, "build", f"{doing} reported no usable digest: {exc}") from None

    def remove_leftovers(self, stage: str, older_than_s: float) -> int:
        """Stop and remove `stage` containers (moto ones too) and then networks created more
        than `older_than_s` ago.

        A worker killed while its container ran never removed it; no live attempt keeps a
        container past its stage's time limit, so anything older is a leftover.
        """
        removed = self._containers.remove_leftovers(stage, older_than_s)
        with engine_errors("freshen", stage, "removing leftover networks"):
            return removed + self._places.remove_leftover_networks(stage, older_than_s)
