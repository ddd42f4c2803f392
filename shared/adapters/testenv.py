"""What a test container gets besides its image: its script, and the network it runs on.

Part of the Docker Engine client: shared/adapters/engine.py hands in its API client and turns
the SDK's errors into freshen's. In moto mode (the default) each test gets an `--internal` network
of its own, named after the test, with a moto server container on it (alias `moto`); both are
created
for the test and removed after it, so a test reaches nothing but its own moto (no egress, not
the host's services) and two tests share no state. In real-AWS mode the test container joins
the `test_network` setting's network (egress; never the host network).
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound

from shared.config import Settings
from shared.constants import CONTAINER_LIMITS, MANAGED_LABEL, TEST_SCRIPT_PATH
from shared.errors import TransientError

log = logging.getLogger(__name__)

# The moto container's name on its test's network: the test's AWS_ENDPOINT_URL names it.
MOTO_ALIAS = "moto"
# Port moto server listens on inside its container (nothing is published on the host).
MOTO_PORT = 5050
# moto answers within about a second; a loaded engine gets this long before the attempt retries.
MOTO_READY_TIMEOUT_S = 45
# Run once inside the moto container (the host cannot reach an internal network): poll its port.
_MOTO_READY = f"""
import sys, time, urllib.request
deadline = time.monotonic() + {MOTO_READY_TIMEOUT_S}
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen("http://127.0.0.1:{MOTO_PORT}/moto-api/", timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
"""
_STAGE = "test"
_LABELS = {MANAGED_LABEL: _STAGE}
# An internal network still gives the host an address on its bridge, where every host service
# bound to 0.0.0.0 answers; without it the test and its moto reach each other and nothing else.
_NO_HOST_ADDRESS = {"com.docker.network.bridge.inhibit_ipv4": "true"}
_CREATED = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class Placement:
    """The network a test container joins and what its environment gains there."""

    network: str
    environment: dict[str, str] = field(default_factory=dict)


def moto_container_name(test_name: str) -> str:
    """The moto container of the test whose container is `test_name`."""
    return f"{test_name}-moto"


def script_archive(script: bytes, secret_files: Mapping[str, bytes] | None = None) -> bytes:
    """An in-memory tar holding the script at TEST_SCRIPT_PATH and each secret file at its
    absolute path (read-only, for any user the image runs as), with their folders. Files, not
    environment variables: what is copied in never shows in `docker inspect`."""
    files = {
        TEST_SCRIPT_PATH: (script, 0o755),
        **{p: (c, 0o444) for p, c in (secret_files or {}).items()},
    }
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted({f for path in files for f in PurePosixPath(path).parents if f.name})
        for folder in folders:
            info = tarfile.TarInfo(folder.relative_to("/").as_posix())
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(info)
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(PurePosixPath(path).relative_to("/").as_posix())
            info.size, info.mode, info.mtime = len(content), mode, now
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _created_s(created: str) -> float:
    """Seconds since the epoch of an Engine timestamp (nanoseconds, `Z`)."""
    found = _CREATED.fullmatch(created)
    if found is None:
        return 0.0  # unreadable: old enough to remove
    whole, fraction, zone = found.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micro}{zone.replace('Z', '+00:00')}").timestamp()


class Placements:
    """Creates and removes tests' networks and moto containers on one engine."""

    def __init__(self, api: docker.APIClient, settings: Settings) -> None:
        self._api = api
        self._settings = settings

    @contextmanager
    def place(self, who: str, name: str) -> Iterator[Placement]:
        """Where the test container `name` runs; in moto mode its network and moto exist
        inside the block and are removed after it, however it ends."""
        if self._settings.test_aws == "real":
            yield Placement(self._settings.test_network)
            return
        self._remove(name)  # a killed attempt of the same test left them
        self._api.create_network(
            name,
            driver="bridge",
            internal=True,
            options=_NO_HOST_ADDRESS,
            labels=_LABELS,
            check_duplicate=True,
        )
        try:
            self._start_moto(who, name)
            yield Placement(name, {"AWS_ENDPOINT_URL": f"http://{MOTO_ALIAS}:{MOTO_PORT}"})
        finally:
            try:
                self._remove(name)
            except (APIError, requests.exceptions.RequestException) as exc:
                # Not the test's outcome: the next test's sweep removes what is left.
                log.error("could not remove test network %s or its moto: %s", name, exc)

    def _start_moto(self, who: str, network: str) -> None:
        image = self._settings.moto_image
        try:
            self._api.inspect_image(image)
        except ImageNotFound:
            raise TransientError(
                f"{who}: test: the moto image {image} is not on this Docker Engine; build it "
                "from deploy/moto.Dockerfile (scripts/services.sh does) or set FRESHEN_MOTO_IMAGE"
            ) from None
        endpoint = self._api.create_endpoint_config(aliases=[MOTO_ALIAS])
        container = self._api.create_container(
            image,
            command=["moto_server", "-H", "0.0.0.0", "-p", str(MOTO_PORT)],
            name=moto_container_name(network),
            labels=_LABELS,
            host_config=self._api.create_host_config(
                network_mode=network, init=True, **CONTAINER_LIMITS
            ),
            networking_config=self._api.create_networking_config({network: endpoint}),
        )
        self._api.start(container)
        probe = self._api.exec_create(container, ["python3", "-c", _MOTO_READY])
        self._api.exec_start(probe)
        if self._api.exec_inspect(probe).get("ExitCode") != 0:
            raise TransientError(
                f"{who}: test: moto server did not answer within {MOTO_READY_TIMEOUT_S} s "
                "(a loaded Docker Engine?); will retry"
            )

    def _remove(self, network: str) -> None:
        """Remove the test's moto container, then its network, when freshen made them."""
        moto = moto_container_name(network)
        with suppress(NotFound):
            if MANAGED_LABEL in (self._api.inspect_container(moto)["Config"]["Labels"] or {}):
                self._api.remove_container(moto, force=True)
        with suppress(NotFound):
            if MANAGED_LABEL in (self._api.inspect_network(network).get("Labels") or {}):
                self._api.remove_network(network)

    def remove_leftover_networks(self, stage: str, older_than_s: float) -> int:
        """Remove `stage` networks created more than `older_than_s` ago (their containers,
        swept first, are gone); a killed worker never removed them."""
        found = self._api.networks(filters={"label": f"{MANAGED_LABEL}={stage}"})
        removed = 0
        for network in found:
            if time.time() - _created_s(str(network.get("Created", ""))) > older_than_s:
                log.warning("removing leftover %s network %s", stage, network["Name"])
                try:
                    self._api.remove_network(network["Id"])
                    removed += 1
                except NotFound:
                    pass
                except (APIError, requests.exceptions.RequestException) as exc:
                    log.error("could not remove network %s: %s", network["Name"], exc)
        return removed
