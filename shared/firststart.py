"""First start of a composed freshen: each secret generated once unless the user set it, then
every service's secrets folder written with only the secrets that service uses.

docker-compose.yml runs this as the one-shot `secrets` service before anything else starts. It
alone sees the compose variables that carry secrets (from `.env`) and every secrets volume; a
service mounts only its own folder and reads it through FRESHEN_SECRETS_DIR (shared/config.py),
Redis and Flower through their compose commands. Nothing here reaches a command line or a log.

    python -m shared.firststart write   # at every start: generate what is missing, write folders
    python -m shared.firststart show    # print the logins (`docker compose run --rm secrets show`)
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import bcrypt

from shared.weaksecrets import WEAK_MESSAGE, is_weak_secret

ROOT = Path("/run/freshen")
"""Where the `secrets` service mounts its volumes: `generated/` (the generated values, kept
across restarts) and one folder per recipient (FOLDERS)."""
GENERATED = {
    "REDIS_PASSWORD": "redis-password",
    "REGISTRY_PASSWORD": "registry-password",
    "FLOWER_PASSWORD": "flower-password",
}
"""Compose variables whose value is generated when the user leaves them unset → file name."""
SETTINGS_FILE_SECRETS = {
    "FRESHEN_REGISTRY_USERNAME": "REGISTRY_USERNAME",
    "FRESHEN_REGISTRY_PASSWORD": "REGISTRY_PASSWORD",
    "FRESHEN_GIT_TOKEN": "GIT_TOKEN",
    "FRESHEN_AWS_ACCESS_KEY_ID": "TEST_AWS_ACCESS_KEY_ID",
    "FRESHEN_AWS_SECRET_ACCESS_KEY": "TEST_AWS_SECRET_ACCESS_KEY",
    "FRESHEN_NOTIFY_URLS": "NOTIFY_URLS",
}
"""Settings that would reach every service from the settings file → the compose variable that
hands them only to the services that use them."""
FOLDERS = ("redis", "registry", "app", "build", "test", "promote", "flower", "metrics", "notify")
"""One secrets folder (and volume) per recipient; `app` is beat's and the check worker's."""
BCRYPT_ROUNDS = 10


@dataclass(frozen=True)
class Logins:
    """The secrets in effect: the user's where set, else the generated ones."""

    redis_password: str
    registry_username: str
    registry_password: str
    flower_user: str
    flower_password: str
    git_token: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    notify_urls: str | None


def refusals(env: Mapping[str, str]) -> list[str]:
    """Why these settings cannot start: a known default password, a secret in the settings file
    every service reads, a character the file formats cannot carry."""
    problems = [
        f"{setting} is in the settings file, which every service reads: remove it and set "
        f"{variable} in .env (docker-compose.yml hands it only to the services that use it)"
        for setting, variable in SETTINGS_FILE_SECRETS.items()
        if env.get(setting)
    ]
    for variable in GENERATED:
        value = env.get(variable, "")
        if value and is_weak_secret(value):
            problems.append(f"{variable} is {WEAK_MESSAGE}; remove it from .env")
        elif any(c.isspace() or not c.isprintable() or c == "," for c in value):
            problems.append(f"{variable} holds a space, a comma or a control character")
    for variable in ("REGISTRY_USERNAME", "FLOWER_USER"):
        if any(c in env.get(variable, "") for c in ":, \t\n"):
            problems.append(f"{variable} holds a colon, a comma or a space")
    return problems


def generated(folder: Path) -> dict[str, str]:
    """The generated values, made on the first start and read back on every later one."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    values = {}
    for variable, name in GENERATED.items():
        path = folder / name
        if not path.exists():
            _write(path, secrets.token_urlsafe(24))
        values[variable] = path.read_text().strip()
    return values


def logins(env: Mapping[str, str], made: Mapping[str, str]) -> Logins:
    def chosen(variable: str) -> str:
        return env.get(variable) or made[variable]

    return Logins(
        redis_password=chosen("REDIS_PASSWORD"),
        registry_username=env.get("REGISTRY_USERNAME") or "freshen",
        registry_password=chosen("REGISTRY_PASSWORD"),
        flower_user=env.get("FLOWER_USER") or "admin",
        flower_password=chosen("FLOWER_PASSWORD"),
        git_token=env.get("GIT_TOKEN") or None,
        aws_access_key_id=env.get("TEST_AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("TEST_AWS_SECRET_ACCESS_KEY") or None,
        notify_urls=env.get("NOTIFY_URLS") or None,
    )


def folders(found: Logins, redis_port: int, htpasswd: str) -> dict[str, dict[str, str]]:
    """Each recipient's files: a FRESHEN_* file is that setting's value (FRESHEN_SECRETS_DIR)."""
    quoted = found.redis_password.replace("\\", "\\\\").replace('"', '\\"')
    requirepass = f'requirepass "{quoted}"'  # a line of redis.conf, read on Redis' stdin
    url = f"redis://:{quote(found.redis_password, safe='')}@127.0.0.1:{redis_port}/0"
    redis = {"FRESHEN_REDIS_URL": url}
    push = {
        "FRESHEN_REGISTRY_USERNAME": found.registry_username,
        "FRESHEN_REGISTRY_PASSWORD": found.registry_password,
    }
    git = {"FRESHEN_GIT_TOKEN": found.git_token} if found.git_token else {}
    aws = {
        name: value
        for name, value in (
            ("FRESHEN_AWS_ACCESS_KEY_ID", found.aws_access_key_id),
            ("FRESHEN_AWS_SECRET_ACCESS_KEY", found.aws_secret_access_key),
        )
        if value
    }
    return {
        "redis": {"redis-password": found.redis_password, "requirepass.conf": requirepass},
        "registry": {"htpasswd": htpasswd},
        "app": redis,
        "build": redis | push,
        "test": redis | aws,
        "promote": redis | push | git,
        "flower": redis | {"flower-basic-auth": f"{found.flower_user}:{found.flower_password}"},
        "metrics": redis,
        "notify": redis | ({"FRESHEN_NOTIFY_URLS": found.notify_urls} if found.notify_urls else {}),
    }


def htpasswd_line(user: str, password: str, current: str) -> str:
    """The registry's htpasswd entry (bcrypt): the current one while it still matches."""
    name, _, hashed = current.strip().partition(":")
    if name == user and hashed and bcrypt.checkpw(password.encode(), hashed.encode()):
        return current.strip()
    salt = bcrypt.gensalt(rounds=BCRYPT_ROUNDS)
    return f"{user}:{bcrypt.hashpw(password.encode(), salt).decode()}"


def write(root: Path, env: Mapping[str, str]) -> None:
    """Generate what is missing and rewrite every folder (a secret taken out of .env goes)."""
    found = logins(env, generated(root / "generated"))
    current = root / "registry" / "htpasswd"
    old = current.read_text() if current.exists() else ""
    entry = htpasswd_line(found.registry_username, found.registry_password, old)
    port = int(env.get("REDIS_PORT") or 6379)
    for name, files in folders(found, port, entry).items():
        _replace_folder(root / name, files)


def show(root: Path, env: Mapping[str, str]) -> str:
    """The logins a person needs, for `docker compose run --rm secrets show`."""
    found = logins(env, generated(root / "generated"))
    return (
        f"flower    http://127.0.0.1:{env.get('FLOWER_PORT') or 5555}  "
        f"user {found.flower_user}  password {found.flower_password}\n"
        f"registry  127.0.0.1:{env.get('REGISTRY_PORT') or 5000}  "
        f"user {found.registry_username}  password {found.registry_password}  "
        f"(anonymous pulls: 127.0.0.1:{env.get('REGISTRY_PULL_PORT') or 5001})\n"
        f"redis     127.0.0.1:{env.get('REDIS_PORT') or 6379}  password {found.redis_password}\n"
    )


def _replace_folder(folder: Path, files: Mapping[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for stale in folder.iterdir():
        if stale.name not in files:
            stale.unlink()
    for name, value in files.items():
        path = folder / name
        if not path.exists() or path.read_text() != value + "\n":
            _write(path, value)


def _write(path: Path, value: str) -> None:
    """Atomically, readable by its owner only (every service runs as root in its container)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".new-")
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:]) or ["write"]
    env = os.environ
    problems = refusals(env)
    if problems:
        for problem in problems:
            print(f"freshen secrets: {problem}", file=sys.stderr)
        return 2
    if command == ["write"]:
        write(ROOT, env)
        print("freshen secrets: every service's secrets are in place")
        return 0
    if command == ["show"]:
        print(show(ROOT, env), end="")
        return 0
    print("usage: python -m shared.firststart [write|show]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
