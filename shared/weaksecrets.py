"""Passwords and tokens freshen refuses to run with, wherever they are set."""

# Passwords freshen once shipped as defaults and their like: anyone can guess them, so they are
# refused wherever they are set (docker-compose.yml's `secrets` service generates real ones).
WEAK_SECRETS = frozenset(
    {"freshen", "admin", "admin:freshen", "password", "passw0rd", "changeme", "change-me",
     "secret", "redis", "registry", "flower", "docker", "root", "test", "testing", "default",
     "letmein", "123456", "12345678"}
)  # fmt: skip


WEAK_MESSAGE = (
    "a known default password that anyone can guess; set one of your own, or leave it unset "
    "where one is generated (docker-compose.yml's secrets service, README)"
)


def is_weak_secret(value: str) -> bool:
    """A password or token freshen must not run with: one of the known defaults."""
    return value.strip().lower() in WEAK_SECRETS
