"""Where the real services the README's test command starts live; every test talks to them."""

from __future__ import annotations

import os

import pytest

# Tests own this database and flush it; TEST_REDIS_DB gives a second session on the same machine
# a database of its own (end-to-end sessions must not share one).
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('TEST_REDIS_DB', '9')}"
REGISTRY = "127.0.0.1:5000"
MOTO_URL = "http://127.0.0.1:5050"
BASE_IMAGE = f"{REGISTRY}/library/debian-python:bookworm"  # built by scripts/base-image.sh

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
