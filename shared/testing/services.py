"""Where the real local services (`scripts/services.sh`) live, and their registry credentials:
only the workers that push get them."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from unittest import mock

from shared.config import Settings, load_settings

REGISTRY = "127.0.0.1:5000"  # needs the credentials in registry.env for every call
PULL_REGISTRY = "127.0.0.1:5001"  # the same storage, read-only and anonymous
# The local base image (scripts/base-image.sh): its name in the local engine, which pushes it…
LOCAL_BASE = f"{REGISTRY}/library/debian-python:bookworm"
# …and how definitions name it: read anonymously, as check workers (no credentials) do.
BASE_IMAGE = f"{PULL_REGISTRY}/library/debian-python:bookworm"
# Where scripts/services.sh keeps the registry credentials it generated (registry.env).
DEV_STATE = Path(os.environ.get("FRESHEN_DEV_STATE", "/var/lib/freshen-dev"))
# The workers that push (and so hold the registry credentials); check and test never do.
PUSHING_QUEUES = frozenset({"build", "promote"})
REGISTRY_SECRETS = ("FRESHEN_REGISTRY_USERNAME", "FRESHEN_REGISTRY_PASSWORD")


@cache
def registry_credentials() -> tuple[str, str]:
    """(username, password) of the shared registry on REGISTRY, from scripts/services.sh."""
    path = DEV_STATE / "registry.env"
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return values["FRESHEN_REGISTRY_USERNAME"], values["FRESHEN_REGISTRY_PASSWORD"]


def registry_env() -> dict[str, str]:
    """The settings that carry the shared registry's credentials (for pushing workers only)."""
    return dict(zip(REGISTRY_SECRETS, registry_credentials(), strict=True))


def for_queue(env: Mapping[str, str], queue: str) -> dict[str, str]:
    """A worker's environment: the registry credentials only for the queues that push."""
    if queue in PUSHING_QUEUES:
        return dict(env)
    return {k: v for k, v in env.items() if k not in REGISTRY_SECRETS}


def shared_registry_env(env: Mapping[str, str]) -> dict[str, str]:
    """A system pushing to the shared registry gets its credentials (the test process and the
    workers that push: `for_queue`) and reads through its anonymous view, as
    scripts/run.sh's workers do."""
    if env.get("FRESHEN_PUSH_REGISTRY") != REGISTRY or "FRESHEN_REGISTRY_USERNAME" in env:
        return {}
    added = {"FRESHEN_PULL_REGISTRY": env.get("FRESHEN_PULL_REGISTRY", PULL_REGISTRY)}
    if insecure := env.get("FRESHEN_INSECURE_REGISTRIES"):
        added["FRESHEN_INSECURE_REGISTRIES"] = f"{insecure},{PULL_REGISTRY}"
    return {**added, **registry_env()}


@contextmanager
def only_settings(env: Mapping[str, str]) -> Iterator[None]:
    """This process's environment with exactly the FRESHEN_* variables of `env` (restored
    after the block)."""
    with mock.patch.dict(os.environ):
        for name in [k for k in os.environ if k.startswith("FRESHEN_")]:
            del os.environ[name]
        os.environ.update({k: v for k, v in env.items() if k.startswith("FRESHEN_")})
        yield


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings from exactly the FRESHEN_* variables of `env` (none of this process's)."""
    with only_settings(env):
        return load_settings()
