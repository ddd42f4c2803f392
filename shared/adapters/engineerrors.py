"""How Docker Engine errors are sorted, once for every call freshen makes to it: an unreachable
engine or registry is a TransientError (the task retries); a failing build, a denied push or a
broken image is a StageError naming the image, the stage and the log tail (upstream's output is
shown, never obeyed)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import requests
from docker.errors import APIError

from shared.adapters.containeroutput import join_tail
from shared.errors import StageError, TransientError
from shared.secrets import neutralize

# Timeout of ordinary Engine API calls; builds, pulls and waits bound their own time.
API_TIMEOUT_S = 120
# Lines of build, pull or push log quoted in an error.
LOG_TAIL_LINES = 20
# Engine error texts that mean "unreachable or overloaded, try again later".
_TRANSIENT = re.compile(
    r"connection refused|no such host|i/o timeout|timeout exceeded|TLS handshake timeout"
    r"|connection reset|unexpected EOF|network is unreachable|server misbehaving"
    r"|toomanyrequests|50[234] |Service Unavailable|Bad Gateway"
    r"|non-overlapping IPv4 address pool",  # test networks of killed workers not swept yet
    re.IGNORECASE,
)
_DENIED = re.compile(r"denied|unauthorized|authentication required", re.IGNORECASE)
_CREDENTIALS_HINT = "check FRESHEN_REGISTRY_USERNAME / FRESHEN_REGISTRY_PASSWORD and the rights"
_DEFINITION_HINT = "fix the definition (Dockerfile, version, base) and run again"


def raise_stream_error(
    image: str, stage: str, doing: str, message: str, tail: Iterable[str]
) -> NoReturn:
    deterministic = "returned a non-zero code" in message
    if not deterministic and _TRANSIENT.search(message):
        raise TransientError(f"{image}: {stage}: {doing} failed, will retry: {message}")
    hint = _CREDENTIALS_HINT if _DENIED.search(message) else _DEFINITION_HINT
    raise StageError(image, stage, f"{doing} failed: {message}; {hint}\n{join_tail(tail)}")


def follow(stream: Iterable[dict[str, Any]], image: str, stage: str, doing: str) -> list[Any]:
    """Read an Engine progress stream to its end; return its aux items, raise on an error item."""
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    aux: list[Any] = []
    errors: list[str] = []
    for item in stream:  # read to the end even after an error, so the connection is released
        text = item.get("stream") or ("" if "id" in item else item.get("status"))
        if isinstance(text, str):  # build output is upstream's: shown, never obeyed
            tail.extend(neutralize(line) for line in text.splitlines() if line.strip())
        if "aux" in item:
            aux.append(item["aux"])
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail") or {}
            errors.append(str(item.get("error") or detail.get("message") or detail).strip())
    if errors:
        raise_stream_error(image, stage, doing, errors[0], tail)
    return aux


@contextmanager
def engine_errors(image: str, stage: str, doing: str) -> Iterator[None]:
    """Turn the Docker SDK's exceptions into freshen's."""
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        why = type(exc).__name__
        raise TransientError(
            f"{image}: {stage}: Docker Engine unreachable {doing} ({why})"
        ) from None
    except APIError as exc:
        raise_stream_error(image, stage, doing, str(exc.explanation or exc), ())
