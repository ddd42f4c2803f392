"""Throw-away containers on the Docker Engine: create (replacing a same-named leftover of a
killed worker), fill, start, wait with a deadline, collect output, stop and always remove; and
the sweep of containers killed workers left behind. Every container freshen starts carries
MANAGED_LABEL with its stage."""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from typing import Any

import docker
import requests
from docker.errors import APIError, NotFound

from shared.adapters.containeroutput import StepLog, split_lines
from shared.adapters.engineerrors import API_TIMEOUT_S, engine_errors
from shared.constants import CONTAINER_LIMITS, MANAGED_LABEL, STOP_GRACE_S

log = logging.getLogger(__name__)


class Containers:
    """Runs containers on one engine (the SDK's low-level client)."""

    def __init__(self, api: docker.APIClient) -> None:
        self._api = api

    def run(
        self,
        image: str,
        who: str,
        stage: str,
        create: dict[str, Any],
        timeout_s: float,
        output: StepLog | list[str],
        archive: bytes | None = None,
    ) -> int | None:
        """Create, fill, start and wait for a container; collect its output; always remove it."""
        args = {"labels": {MANAGED_LABEL: stage}, **create}
        network_mode = args.pop("network_mode")
        args["host_config"] = self._api.create_host_config(
            network_mode=network_mode, **CONTAINER_LIMITS
        )
        with engine_errors(who, stage, "running a container"):
            container = self.create(image, args)
            try:
                if archive is not None:
                    self._api.put_archive(container, "/", archive)
                self._api.start(container)
                exit_code = self._wait(container, timeout_s)
                for line in split_lines(self._api.logs(container, stream=True)):
                    output.append(line)
            finally:
                self.remove(container)
        return exit_code

    def create(self, image: str, args: dict[str, Any]) -> str:
        try:
            return str(self._api.create_container(image, **args)["Id"])
        except APIError as exc:
            name = args.get("name")
            if exc.status_code != 409 or name is None or not self.remove_stale(name):
                raise
        return str(self._api.create_container(image, **args)["Id"])

    def remove_stale(self, name: str) -> bool:
        """Remove a same-named container a killed worker left behind, if it is freshen's."""
        labels = self._api.inspect_container(name)["Config"].get("Labels") or {}
        if MANAGED_LABEL not in labels:
            return False
        log.warning("removing leftover container %s", name)
        self.stop(name)
        self._api.remove_container(name, force=True)
        return True

    def remove_leftovers(self, stage: str, older_than_s: float) -> int:
        """Stop and remove `stage` containers (moto ones too) created more than `older_than_s`
        ago; how many."""
        filters = {"label": f"{MANAGED_LABEL}={stage}"}
        with engine_errors("freshen", stage, "listing leftover containers"):
            found = self._api.containers(all=True, filters=filters)
        removed = 0
        for container in found:
            if time.time() - int(container.get("Created", 0)) > older_than_s:
                log.warning("removing leftover %s container %s", stage, container["Id"][:12])
                with suppress(NotFound, APIError):
                    self.stop(container["Id"])
                self.remove(container["Id"])
                removed += 1
        return removed

    def stop(self, container: str) -> None:
        """SIGTERM (the script's clean-up trap runs), SIGKILL after STOP_GRACE_S."""
        with suppress(APIError):
            self._api.kill(container, signal="SIGTERM")
        try:
            self._api.wait(container, timeout=STOP_GRACE_S)
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
            with suppress(APIError):
                self._api.kill(container)
            self._api.wait(container, timeout=API_TIMEOUT_S)

    def remove(self, container: str) -> None:
        try:
            self._api.remove_container(container, force=True)
        except NotFound:
            pass
        except (APIError, requests.exceptions.RequestException) as exc:
            log.error("could not remove container %s: %s", container[:12], type(exc).__name__)

    def _wait(self, container: str, timeout_s: float) -> int | None:
        """The container's exit code, or None after killing it at the time limit."""
        deadline = time.monotonic() + timeout_s
        try:
            result = self._api.wait(container, timeout=timeout_s)
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
            # Over a unix socket the SDK reports its read timeout as a ConnectionError.
            if time.monotonic() < deadline - 0.5:
                raise
            self.stop(container)
            return None
        return int(result["StatusCode"])
