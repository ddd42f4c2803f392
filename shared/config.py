"""One typed settings object, read once at process start from FRESHEN_* environment variables.

Unknown FRESHEN_* variables and malformed values are errors, never ignored: a typo in a setting
would otherwise silently fall back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigError
from shared.weaksecrets import WEAK_MESSAGE, is_weak_secret

ENV_PREFIX = "FRESHEN_"
# Between two Apprise URLs: white space, or a comma where the next URL's scheme starts.
URL_SEPARATOR = r"\s+|,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)"


class Settings(BaseSettings):
    """Every setting of freshen, with its default. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Broker, result backend and event log (Redis Streams)."""
    secrets_dir: Path | None = None
    """Folder of files named after settings (`FRESHEN_REDIS_URL`, …), each holding that
    setting's value, read for settings the environment does not set: how docker-compose.yml's
    `secrets` service hands each service its own secrets without putting them in its config."""
    images_dir: Path = Path("images")
    """Folder of image definitions, one sub-folder (with an image.toml) per watched image."""
    check_interval_s: float = Field(60.0, gt=0)
    """How often beat checks every image."""
    check_batch_size: int = Field(50, gt=0)
    """Images one check task checks, one after the other: beat sends a task per batch, so
    Celery's cost per task (events, result, hand-off) is paid once per batch, not per image.
    A batch must finish within check_time_limit_s; images it did not reach wait for the next."""
    reconcile_interval_s: float = Field(30.0, gt=0)
    """How often beat sends the reconcile task that resumes stalled runs (twice this is the
    grace before a stage that never started is sent again)."""
    audit_interval_s: float = Field(300.0, gt=0)
    """How often beat sends the audit that compares the registry's tags with the event log."""
    infra_retries: int = Field(3, ge=0)
    """How often a run that failed on infrastructure (not on its tests) is tried again."""
    infra_retry_backoff_s: float = Field(300.0, ge=0)
    """Wait before the first such retry; it doubles with each retry."""

    push_registry: str = "127.0.0.1:5000"
    """Registry host[:port] that candidates and promoted tags are pushed to."""
    pull_registry: str | None = None
    """Registry host[:port] that processes without credentials (the test worker, the audit)
    read pushed images from, by digest or tag: e.g. a read-only, anonymous view of the push
    registry's storage (127.0.0.1:5001 of scripts/services.sh). None: the push registry."""
    registry_username: str | None = None
    """Username for the push registry (and for base images on the same host); give it only to
    the processes that push (build and promote workers)."""
    registry_password: SecretStr | None = None
    """Password or token for the push registry; never logged; only the build and promote
    workers get it."""
    insecure_registries: Annotated[tuple[str, ...], NoDecode] = (
        "127.0.0.1:5000",
        "localhost:5000",
        "127.0.0.1:5001",
        "localhost:5001",
    )
    """Registries spoken to over plain HTTP (loopback test registries)."""
    token_realm_hosts: Annotated[tuple[str, ...], NoDecode] = ("auth.docker.io",)
    """Hosts besides the registry itself whose token service (a 401's Bearer realm) is
    trusted with credentials: Docker Hub's auth.docker.io by default."""

    build_network: str = "bridge"
    """Docker network builds run on: the engine's bridge (egress for package indexes, no way to
    the host's loopback services). `host` is refused."""
    test_aws: Literal["moto", "real"] = "moto"
    """What image tests talk to: `moto`, a moto server container of the test's own on an
    internal network of its own (no egress); `real`, AWS itself over `test_network`."""
    moto_image: str = "freshen-moto:local"
    """Image of the per-test moto server (built from deploy/moto.Dockerfile), on each engine."""
    test_network: str = "bridge"
    """Docker network with egress that tests use in real-AWS mode only. `host` is refused."""
    aws_access_key_id: str = "testing"
    """Access key given to test containers (test credentials only)."""
    aws_secret_access_key: SecretStr = SecretStr("testing")
    """Secret key given to test containers; never logged."""
    aws_region: str = "us-east-1"
    """Region for image tests."""

    git_url: str | None = None
    """Git repository (any URL git understands) the versions file is committed to; none: skip."""
    git_branch: str = "main"
    """Branch the versions file is committed on."""
    git_token: SecretStr | None = None
    """Token for an HTTPS git remote, handed to git through GIT_ASKPASS; never logged."""
    git_workdir: Path = Path("/var/lib/freshen/git")
    """Local clone the promote worker commits in."""
    git_author: str = "freshen <freshen@localhost>"
    """Author and committer of versions-file commits."""

    vulnerability_index: str = "https://pypi.org/pypi"
    """Root of the PyPI JSON API whose `vulnerabilities` the test stage reads for every
    distribution installed in a candidate (`<index>/<name>/<version>/json`, as pip-audit does)."""

    http_timeout_s: float = Field(10.0, gt=0)
    """Connect and read timeout of every HTTP request to PyPI and registries."""
    http_retries: int = Field(3, ge=0)
    """Retries of one HTTP request on connection errors, 429 and 5xx (with backoff)."""
    retry_after_max_s: float = Field(30.0, ge=0)
    """Longest Retry-After honoured inside one request; longer waits fail over to a task retry."""
    max_response_bytes: int = Field(64 * 1024 * 1024, gt=0)
    """Largest upstream response body read; bigger answers are an error."""

    check_time_limit_s: int = Field(120, gt=0)
    """Hard time limit of a check task (one image, or a batch of check_batch_size)."""
    build_time_limit_s: int = Field(1800, gt=0)
    """Hard time limit of a build task (also bounds the broker's visibility timeout)."""
    test_time_limit_s: int = Field(900, gt=0)
    """Hard time limit of a test task; the test container is stopped before it."""
    promote_time_limit_s: int = Field(300, gt=0)
    """Hard time limit of a promote task."""
    test_output_tail_lines: int = Field(20, gt=0)
    """Lines of each test command's output kept in the event."""

    log_level: str = "INFO"
    """Log level of workers and beat."""
    metrics_address: str = "127.0.0.1"
    """Address the Prometheus /metrics endpoint (python -m shared.metrics) binds."""
    metrics_port: int = Field(9808, gt=0, lt=65536)
    """Port of the Prometheus /metrics endpoint."""

    notify_urls: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Apprise URLs the notifier (python -m shared.notify) posts to, separated by spaces, new
    lines or commas (`slack://…`, `json://host/path`, `mailto://…`); secrets, masked like the
    others. None: the notifier sends nothing."""
    notify_events: Annotated[tuple[str, ...], NoDecode] = (
        "BuildFailed", "TestsFailed", "PromotionFailed", "Promoted", "CheckFailed",
        "AuditRecorded", "VulnerabilitiesChecked",
    )  # fmt: skip
    """Event types that notify, by name. A failure on infrastructure notifies once freshen
    stops retrying it; CheckFailed once checks fail for notify_check_failing_s; AuditRecorded
    when it found drift."""
    notify_check_failing_s: float = Field(900.0, ge=0)
    """How long an image's checks fail without recovering before CheckFailed notifies."""
    notify_retry_initial_s: float = Field(2.0, gt=0)
    """Wait after a failed delivery before a target is tried again; doubles per failure."""
    notify_retry_max_s: float = Field(300.0, gt=0)
    """Longest wait between deliveries to a target that keeps failing."""
    notify_claim_idle_s: float = Field(60.0, gt=0)
    """An event a notifier read but never handed on (it died) is taken over after this long."""
    notify_consumer: str = ""
    """This notifier's name in the consumer group (empty: the host name)."""

    @field_validator("insecure_registries", "token_realm_hosts", "notify_events", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("build_network", "test_network")
    @classmethod
    def _not_the_host_network(cls, value: str) -> str:
        """A container on the host network reaches every loopback service (registry, Redis)."""
        if value.strip().lower() == "host":
            raise ValueError(
                "the host network is refused: a container there reaches the registry, Redis and "
                "every other service on the host's loopback; use bridge or a network you created"
            )
        if not value.strip():
            raise ValueError("name a Docker network, e.g. bridge")
        return value

    @field_validator("vulnerability_index")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
            raise ValueError("must be an http(s) URL, e.g. https://pypi.org/pypi")
        if urlsplit(value).password is not None:  # it is named in events and error messages
            raise ValueError("the URL carries credentials (user:password@); use an index without")
        return value.rstrip("/")

    @field_validator("git_url", "pull_registry", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("git_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        """A token in the URL would land in .git/config and in every git error message."""
        if value is None:
            return value
        if urlsplit(value).password is not None:  # a user name alone is fine (askpass)
            raise ValueError(
                "the URL carries credentials (user:token@); remove them and put the token in "
                "FRESHEN_GIT_TOKEN"
            )
        return value

    @field_validator("registry_password", "git_token")
    @classmethod
    def _not_a_known_default(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and is_weak_secret(value.get_secret_value()):
            raise ValueError(f"refused: {WEAK_MESSAGE}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _no_known_default_password(cls, value: str) -> str:
        password = urlsplit(value).password
        if password is not None and is_weak_secret(unquote(password)):
            raise ValueError(f"refused: the URL's password is {WEAK_MESSAGE}")
        return value

    @field_validator("notify_urls", mode="before")
    @classmethod
    def _url_list(cls, value: object) -> object:
        if isinstance(value, str):  # a comma only separates where the next URL starts
            return tuple(v for v in re.split(URL_SEPARATOR, value) if v)
        return value

    @field_validator("notify_urls")
    @classmethod
    def _apprise_understands(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        from shared.notify.targets import unusable

        if problems := unusable([url.get_secret_value() for url in value]):
            raise ValueError(problems)
        return value

    @field_validator("notify_events")
    @classmethod
    def _notifiable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from shared.notify.messages import NOTIFIABLE

        if unknown := sorted(set(value) - NOTIFIABLE):
            raise ValueError(f"unknown event types {unknown}; known: {sorted(NOTIFIABLE)}")
        return value


def read_registry(settings: Settings) -> str:
    """Where this process reads the images freshen pushed: the push registry when it holds
    credentials for it, else the pull registry (anonymous); the push registry without one."""
    if settings.registry_username and settings.registry_password is not None:
        return settings.push_registry
    return settings.pull_registry or settings.push_registry


def soft_time_limit_s(hard_s: int) -> int:
    """A stage's soft time limit: before the hard one, leaving the task time to record its end."""
    return max(hard_s - min(30, hard_s // 4), 1)


def load_settings() -> Settings:
    """Read the settings once; raise ConfigError naming every unknown or malformed variable."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    folder = _secrets_folder(known)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)} (see .env.example for the list)")
    try:
        return Settings(_secrets_dir=folder)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"malformed settings: {problems}") from None


def _secrets_folder(known: set[str]) -> Path | None:
    """FRESHEN_SECRETS_DIR, checked like the environment: a file there named like a setting
    that does not exist is an error, as a mistyped variable is."""
    value = os.environ.get(ENV_PREFIX + "SECRETS_DIR")
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise ConfigError(f"FRESHEN_SECRETS_DIR: {folder} is not a folder")
    names = sorted(p.name for p in folder.iterdir() if p.name.upper().startswith(ENV_PREFIX))
    unknown = [n for n in names if n.upper() not in known]
    if unknown:
        raise ConfigError(f"unknown settings in {folder}: {', '.join(unknown)}")
    return folder
