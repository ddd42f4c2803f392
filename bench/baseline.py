"""The plain-script baseline: build → test → promote as a cron job would script it, with the
Docker SDK and the registry's HTTP API directly. No event log, no queues, no retries, no leases.

It does the same work as freshen's stages: resolve the base digest, build with the same build
args and labels, push `develop`, read the OS release inside the image, run the test script in
the image (test credentials, an internal network of its own with a moto container started for
the test, as freshen does), copy the manifest to the release tags.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import docker
import requests

from shared.constants import MANIFEST_ACCEPT

ACCEPT = ", ".join(MANIFEST_ACCEPT)
# The per-test moto server, from the image scripts/services.sh builds.
MOTO_IMAGE = "freshen-moto:local"
MOTO_COMMAND = ["moto_server", "-H", "0.0.0.0", "-p", "5050"]
MOTO_ENDPOINT = "http://moto:5050"
MOTO_READY = """
import time, urllib.request
for _ in range(450):
    try:
        urllib.request.urlopen("http://127.0.0.1:5050/moto-api/", timeout=2)
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit(1)
"""
OS_SCRIPT = ". /etc/os-release; echo $ID; cat /etc/debian_version 2>/dev/null || echo $VERSION_ID"


class PlainScript:
    """One pipeline run per call of `run`; a Docker client and an HTTP session kept open."""

    def __init__(
        self, registry: str, test_env: dict[str, str], credentials: tuple[str, str]
    ) -> None:
        self._docker = docker.from_env(timeout=600)
        self._http = requests.Session()
        self._http.auth = credentials
        self._auth = {"username": credentials[0], "password": credentials[1]}
        self._registry = registry
        self._test_env = test_env

    def close(self) -> None:
        self._docker.close()
        self._http.close()

    def run(
        self, folder: Path, base: str, repository: str, version: str, labels: dict[str, str]
    ) -> str:
        """Build, test and promote; return the promoted digest."""
        target = f"{self._registry}/{repository}"
        base_pinned = f"{base.rsplit(':', 1)[0]}@{self._digest(base)}"
        digest = self._build_and_push(folder, target, base_pinned, version, labels)
        os_id, os_version = self._read_os(f"{target}@{digest}")
        exit_code = self._test(f"{target}@{digest}", folder / "test.sh")
        if exit_code != 0:
            raise RuntimeError(f"test script exited {exit_code}")
        minor = version.rsplit(".", 1)[0]
        for tag in (version, minor, "latest", f"{version}-{os_id}{os_version}"):
            self._copy(repository, digest, tag)
        return digest

    def _digest(self, image: str) -> str:
        registry, rest = image.split("/", 1)
        repository, tag = rest.rsplit(":", 1)
        url = f"http://{registry}/v2/{repository}/manifests/{tag}"
        response = self._http.head(url, headers={"Accept": ACCEPT}, timeout=10)
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]

    def _build_and_push(
        self, folder: Path, target: str, base: str, version: str, labels: dict[str, str]
    ) -> str:
        build = self._docker.api.build(
            path=str(folder),
            tag=f"{target}:develop",
            buildargs={"BASE": base, "VERSION": version},
            labels=labels,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for item in build:
            if "error" in item:
                raise RuntimeError(f"build failed: {item['error']}")
        digest = ""
        pushed = self._docker.api.push(
            target, tag="develop", stream=True, decode=True, auth_config=self._auth
        )
        for item in pushed:
            if "error" in item:
                raise RuntimeError(f"push failed: {item['error']}")
            digest = item.get("aux", {}).get("Digest", digest)
        return digest

    def _read_os(self, image: str) -> tuple[str, str]:
        output = self._docker.containers.run(
            image, entrypoint=["sh", "-c", OS_SCRIPT], network_mode="none", remove=True
        )
        os_id, os_version = output.decode().split()[:2]
        return os_id, os_version

    def _test(self, image: str, script: Path) -> int:
        test_id = uuid.uuid4().hex[:12]
        env = {**self._test_env, "FRESHEN_TEST_ID": test_id, "AWS_ENDPOINT_URL": MOTO_ENDPOINT}
        network = self._docker.networks.create(f"baseline-{test_id}", internal=True)
        alias = {network.name: self._docker.api.create_endpoint_config(aliases=["moto"])}
        moto = self._docker.containers.run(
            MOTO_IMAGE, MOTO_COMMAND, detach=True, network=network.name, networking_config=alias
        )
        try:
            if moto.exec_run(["python3", "-c", MOTO_READY]).exit_code != 0:
                raise RuntimeError("moto did not answer")
            container = self._docker.containers.create(
                image, entrypoint=["sh", "/test.sh"], environment=env, network=network.name
            )
            try:
                container.put_archive("/", _tar("test.sh", script.read_bytes()))
                container.start()
                return int(container.wait()["StatusCode"])
            finally:
                container.remove(force=True)
        finally:
            moto.remove(force=True)
            network.remove()

    def _copy(self, repository: str, digest: str, tag: str) -> None:
        base = f"http://{self._registry}/v2/{repository}/manifests"
        manifest = self._http.get(f"{base}/{digest}", headers={"Accept": ACCEPT}, timeout=10)
        manifest.raise_for_status()
        media_type = manifest.headers["Content-Type"]
        put = self._http.put(
            f"{base}/{tag}", data=manifest.content, headers={"Content-Type": media_type}, timeout=10
        )
        put.raise_for_status()


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
