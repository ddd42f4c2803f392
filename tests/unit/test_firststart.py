"""Compose's first start (shared/firststart.py): generated secrets, user-set ones, refusals, and
each service's folder holding only what that service uses."""

from __future__ import annotations

import re
from pathlib import Path

import bcrypt
import pytest

from shared.firststart import FOLDERS, main, refusals, show, write

EVERYTHING_SET = {
    "GIT_TOKEN": "ghp_Zq8-git-token",
    "TEST_AWS_ACCESS_KEY_ID": "AKIAZQ8TEST",
    "TEST_AWS_SECRET_ACCESS_KEY": "Zq8-aws-secret",
    "NOTIFY_URLS": "slack://Zq8A/Zq8B/Zq8C json://127.0.0.1:9/hook",
}


def files(root: Path, folder: str) -> dict[str, str]:
    return {p.name: p.read_text().strip() for p in sorted((root / folder).iterdir())}


def test_each_service_gets_only_its_secrets(tmp_path: Path) -> None:
    write(tmp_path, EVERYTHING_SET)
    got = {folder: set(files(tmp_path, folder)) for folder in FOLDERS}
    redis_url = {"FRESHEN_REDIS_URL"}
    push = {"FRESHEN_REGISTRY_USERNAME", "FRESHEN_REGISTRY_PASSWORD"}
    aws = {"FRESHEN_AWS_ACCESS_KEY_ID", "FRESHEN_AWS_SECRET_ACCESS_KEY"}
    assert got == {
        "redis": {"redis-password", "requirepass.conf"},
        "registry": {"htpasswd"},
        "app": redis_url,
        "build": redis_url | push,
        "test": redis_url | aws,
        "promote": redis_url | push | {"FRESHEN_GIT_TOKEN"},
        "flower": redis_url | {"flower-basic-auth"},
        "metrics": redis_url,
        "notify": redis_url | {"FRESHEN_NOTIFY_URLS"},
    }
    assert files(tmp_path, "notify")["FRESHEN_NOTIFY_URLS"] == EVERYTHING_SET["NOTIFY_URLS"]
    assert all(not (tmp_path / f).stat().st_mode & 0o077 for f in FOLDERS)


def test_generated_once_kept_after_and_different_per_installation(tmp_path: Path) -> None:
    write(tmp_path / "one", {})
    first = {folder: files(tmp_path / "one", folder) for folder in FOLDERS}
    write(tmp_path / "one", {})
    assert {folder: files(tmp_path / "one", folder) for folder in FOLDERS} == first
    write(tmp_path / "two", {})
    second = {folder: files(tmp_path / "two", folder) for folder in FOLDERS}
    assert first["redis"]["redis-password"] != second["redis"]["redis-password"]
    assert first["build"] != second["build"] and first["registry"] != second["registry"]
    assert first["flower"]["flower-basic-auth"] != second["flower"]["flower-basic-auth"]
    assert len(first["redis"]["redis-password"]) >= 32


def test_the_registry_accepts_the_login_the_pushers_hold(tmp_path: Path) -> None:
    write(tmp_path, {"REGISTRY_USERNAME": "ci-bot"})
    build = files(tmp_path, "build")
    user, _, hashed = files(tmp_path, "registry")["htpasswd"].partition(":")
    assert user == build["FRESHEN_REGISTRY_USERNAME"] == "ci-bot"
    assert bcrypt.checkpw(build["FRESHEN_REGISTRY_PASSWORD"].encode(), hashed.encode())


def test_a_user_set_secret_wins_and_one_taken_out_goes(tmp_path: Path) -> None:
    own = 'my-own/redis"pass@'
    write(tmp_path, {"REDIS_PASSWORD": own, **EVERYTHING_SET})
    redis = files(tmp_path, "redis")
    assert redis["redis-password"] == own
    assert redis["requirepass.conf"] == 'requirepass "my-own/redis\\"pass@"'
    url = files(tmp_path, "app")["FRESHEN_REDIS_URL"]
    assert url == "redis://:my-own%2Fredis%22pass%40@127.0.0.1:6379/0"
    write(tmp_path, {})
    assert "FRESHEN_GIT_TOKEN" not in files(tmp_path, "promote")
    assert files(tmp_path, "redis")["redis-password"] != own


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_PASSWORD": "freshen"}, "REDIS_PASSWORD is a known default password"),
        ({"FLOWER_PASSWORD": "Freshen"}, "FLOWER_PASSWORD is a known default password"),
        ({"REGISTRY_PASSWORD": "password"}, "REGISTRY_PASSWORD is a known default password"),
        ({"FRESHEN_GIT_TOKEN": "ghp_x"}, "FRESHEN_GIT_TOKEN is in the settings file.*GIT_TOKEN"),
        ({"FRESHEN_REGISTRY_PASSWORD": "x" * 20}, "set REGISTRY_PASSWORD in .env"),
        ({"FRESHEN_NOTIFY_URLS": "slack://a/b/c"}, "set NOTIFY_URLS in .env"),
        ({"FLOWER_PASSWORD": "two,logins-here"}, "FLOWER_PASSWORD holds a space, a comma"),
        ({"FLOWER_USER": "ad:min"}, "FLOWER_USER holds a colon"),
    ],
)
def test_refused(env: dict[str, str], message: str) -> None:
    assert any(re.search(message, p) for p in refusals(env)), refusals(env)


def test_a_refusal_writes_nothing_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("shared.firststart.ROOT", tmp_path)
    monkeypatch.setenv("FLOWER_PASSWORD", "freshen")
    assert main(["write"]) == 2
    assert "FLOWER_PASSWORD is a known default password" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_show_prints_the_logins_in_effect(tmp_path: Path) -> None:
    write(tmp_path, {"FLOWER_USER": "ops"})
    shown = show(tmp_path, {"FLOWER_USER": "ops", "FLOWER_PORT": "15555"})
    user, _, password = files(tmp_path, "flower")["flower-basic-auth"].partition(":")
    assert f"http://127.0.0.1:15555  user {user}  password {password}" in shown
    assert files(tmp_path, "build")["FRESHEN_REGISTRY_PASSWORD"] in shown
