"""Where the real services the README's test command starts live; every test talks to them."""

from __future__ import annotations

import os

import pytest

# Where the real services live and who gets their credentials: shared with the benchmarks.
from shared.testing.services import BASE_IMAGE as BASE_IMAGE
from shared.testing.services import LOCAL_BASE as LOCAL_BASE
from shared.testing.services import PULL_REGISTRY as PULL_REGISTRY
from shared.testing.services import REGISTRY as REGISTRY
from shared.testing.services import for_queue as for_queue
from shared.testing.services import registry_credentials as registry_credentials
from shared.testing.services import registry_env as registry_env
from shared.testing.services import shared_registry_env as shared_registry_env

# Tests own this database and flush it; TEST_REDIS_DB gives a second session on the same machine
# a database of its own (end-to-end sessions must not share one).
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('TEST_REDIS_DB', '9')}"

# A stray FRESHEN_* variable from the shell would change what the tests exercise.
for _name in [k for k in os.environ if k.startswith("FRESHEN_")]:
    del os.environ[_name]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-trials",
        type=int,
        default=5,
        help="trials per stage and fault in tests/faults (default 5); more need --timeout=0",
    )


def registry_auth() -> dict[str, str]:
    """The credentials as the Docker SDK's auth_config (pushes from tests)."""
    username, password = registry_credentials()
    return {"username": username, "password": password}
