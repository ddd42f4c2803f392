"""The errors freshen raises. Each names the image and the stage, and says what to do next."""

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class FreshenError(Exception):
    """Base of every error freshen raises on purpose."""


class ConfigError(FreshenError):
    """A setting or an image definition is missing or malformed; fix it and restart."""


class InvalidInput(FreshenError, ValueError):
    """A value (version, tag, reference, name) failed validation before use."""


class StageError(FreshenError):
    """A stage of a run failed for good; the message names image, stage and the next step."""

    def __init__(self, image: str, stage: str, message: str) -> None:
        super().__init__(f"{image}: {stage} failed: {message}")
        self.image = image
        self.stage = stage
        self.detail = message


class TransientError(FreshenError):
    """An outside system is unreachable or overloaded; the task retries with backoff."""


class UpstreamError(FreshenError):
    """An upstream (PyPI, a registry) answered something unusable; retrying will not help now."""


class ConcurrencyError(FreshenError):
    """An append expected a stream position that another writer already took."""


# Errors that mean "an outside system is unreachable right now": retried with backoff, and a
# stage that stops on one keeps its lease for the retry.
TRANSIENT = (TransientError, RedisConnectionError, RedisTimeoutError)
