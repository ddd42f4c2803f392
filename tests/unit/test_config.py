"""Settings and image definitions: typos and malformed values are errors naming the culprit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shared.config import load_settings
from shared.definitions import load_definition, load_definitions
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other tests in the session may have set FRESHEN_* variables; these tests start clean."""
    for name in [k for k in os.environ if k.startswith("FRESHEN_")]:
        monkeypatch.delenv(name)


def test_defaults_are_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.check_interval_s == 60
    assert (settings.build_network, settings.test_aws, settings.test_network) == (
        "bridge",
        "moto",
        "bridge",
    )
    assert settings.moto_image == "freshen-moto:local"


def test_unknown_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHEN_CHECK_INTERVL_S", "5")
    with pytest.raises(ConfigError, match="FRESHEN_CHECK_INTERVL_S"):
        load_settings()


def test_malformed_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHEN_CHECK_INTERVAL_S", "soon")
    with pytest.raises(ConfigError, match="FRESHEN_CHECK_INTERVAL_S"):
        load_settings()


def test_secrets_do_not_show_in_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHEN_REGISTRY_PASSWORD", "hunter2-distinctive")
    assert "hunter2-distinctive" not in repr(load_settings())


@pytest.mark.parametrize(
    "url",
    [
        "https://ci-bot:ghp_Zq8distinctive@github.com/org/versions.git",
        "http://x-access-token:ghp_Zq8distinctive@127.0.0.1:3000/versions.git",
    ],
)
def test_a_git_url_with_credentials_is_refused_without_showing_them(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("FRESHEN_GIT_URL", url)
    with pytest.raises(
        ConfigError, match=r"FRESHEN_GIT_URL.*put the token in FRESHEN_GIT_TOKEN"
    ) as e:
        load_settings()
    assert "ghp_Zq8distinctive" not in str(e.value)


@pytest.mark.parametrize(
    "url", ["ssh://git@github.com/org/versions.git", "https://ci-bot@github.com/org/v.git"]
)
def test_a_git_url_may_name_its_user(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("FRESHEN_GIT_URL", url)  # the token comes from FRESHEN_GIT_TOKEN
    assert load_settings().git_url == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("pypi.org/pypi", r"must be an http\(s\) URL"),
        ("https://ci:pw_Zq8distinctive@mirror.example/pypi", "carries credentials"),
    ],
)
def test_the_vulnerability_index_is_a_plain_http_url(
    monkeypatch: pytest.MonkeyPatch, url: str, error: str
) -> None:
    monkeypatch.setenv("FRESHEN_VULNERABILITY_INDEX", url)
    with pytest.raises(ConfigError, match=rf"FRESHEN_VULNERABILITY_INDEX: .*{error}") as e:
        load_settings()
    assert "pw_Zq8distinctive" not in str(e.value)
    monkeypatch.setenv("FRESHEN_VULNERABILITY_INDEX", "http://127.0.0.1:8080/pypi/")
    assert load_settings().vulnerability_index == "http://127.0.0.1:8080/pypi"


def test_real_aws_is_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHEN_TEST_AWS", "real")
    monkeypatch.setenv("FRESHEN_TEST_NETWORK", "egress")
    settings = load_settings()
    assert (settings.test_aws, settings.test_network) == ("real", "egress")
    monkeypatch.setenv("FRESHEN_TEST_AWS", "localstack")
    with pytest.raises(ConfigError, match="FRESHEN_TEST_AWS"):
        load_settings()


def test_the_endpoint_setting_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHEN_AWS_ENDPOINT_URL", "http://127.0.0.1:5050")  # tests get a moto
    with pytest.raises(ConfigError, match="unknown settings: FRESHEN_AWS_ENDPOINT_URL"):
        load_settings()


@pytest.mark.parametrize("setting", ["FRESHEN_BUILD_NETWORK", "FRESHEN_TEST_NETWORK"])
@pytest.mark.parametrize("value", ["host", " HOST", ""])
def test_the_host_network_is_refused(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(setting, value)
    with pytest.raises(ConfigError, match=rf"{setting}: .*(host network is refused|name a)"):
        load_settings()


def test_the_shipped_definitions_load() -> None:
    definitions = load_definitions(ROOT / "images")
    assert "awscli" in definitions
    assert definitions["awscli"].spec.source.pypi == "awscli"


def copy_awscli(tmp_path: Path) -> Path:
    folder = tmp_path / "tool"
    shutil.copytree(ROOT / "images" / "awscli", folder)
    return folder


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('pypi = "awscli"', 'pypi = "awscli; rm -rf /"', "source.pypi"),
        ('image = "python:3-alpine"', 'image = "python:3\\nalpine"', "base.image"),
        ('repository = "freshen/awscli"', 'repository = "../../etc"', "target.repository"),
        ("latest = true", 'latest = "yes please"', "target.latest"),
        ("latest = true", 'latest = "yes"', "target.latest"),  # no lax coercion of strings
        ('test = "test.sh"', 'test = "../../etc/passwd"', "files.test"),
        ("[files]", "[files]\nextra = 1", "files.extra"),
    ],
)
def test_broken_definition_names_file_and_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    folder = copy_awscli(tmp_path)
    toml = folder / "image.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_definition(folder)
    assert str(toml) in str(caught.value) and field in str(caught.value)


def test_definition_that_is_not_toml(tmp_path: Path) -> None:
    folder = copy_awscli(tmp_path)
    (folder / "image.toml").write_text("[source\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_definition(folder)


def test_every_setting_is_documented_in_env_example() -> None:
    from shared.config import ENV_PREFIX, Settings

    documented = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"{ENV_PREFIX}{name.upper()}=" in documented, name


def test_only_a_process_with_the_credentials_reads_the_push_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.config import read_registry

    settings = load_settings()
    assert settings.pull_registry is None and read_registry(settings) == "127.0.0.1:5000"
    assert "127.0.0.1:5001" in settings.insecure_registries
    monkeypatch.setenv("FRESHEN_PULL_REGISTRY", "127.0.0.1:5001")
    assert read_registry(load_settings()) == "127.0.0.1:5001"  # the test worker, the audit
    monkeypatch.setenv("FRESHEN_REGISTRY_USERNAME", "freshen")
    monkeypatch.setenv("FRESHEN_REGISTRY_PASSWORD", "pw")
    assert read_registry(load_settings()) == "127.0.0.1:5000"  # build and promote workers
    monkeypatch.setenv("FRESHEN_PULL_REGISTRY", "")
    assert load_settings().pull_registry is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FRESHEN_REGISTRY_PASSWORD", "freshen"),
        ("FRESHEN_REGISTRY_PASSWORD", "Admin"),
        ("FRESHEN_GIT_TOKEN", "changeme"),
        ("FRESHEN_REDIS_URL", "redis://:freshen@127.0.0.1:6379/0"),
        ("FRESHEN_REDIS_URL", "redis://default:password@127.0.0.1:6379/0"),
    ],
)
def test_a_known_default_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}.*known default password"):
        load_settings()


def test_settings_files_fill_what_the_environment_leaves_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "FRESHEN_REDIS_URL").write_text("redis://:Zq8-generated@127.0.0.1:16379/0\n")
    (tmp_path / "FRESHEN_REGISTRY_PASSWORD").write_text("Zq8-registry-generated\n")
    (tmp_path / "flower-basic-auth").write_text("admin:not-a-setting\n")  # another reader's
    monkeypatch.setenv("FRESHEN_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("FRESHEN_REGISTRY_PASSWORD", "Zq8-from-the-environment")
    settings = load_settings()
    assert settings.redis_url == "redis://:Zq8-generated@127.0.0.1:16379/0"
    assert settings.registry_password is not None
    assert settings.registry_password.get_secret_value() == "Zq8-from-the-environment"


def test_a_mistyped_settings_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "FRESHEN_REGISTRY_PASSWROD").write_text("Zq8-registry\n")
    monkeypatch.setenv("FRESHEN_SECRETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="FRESHEN_REGISTRY_PASSWROD"):
        load_settings()
    monkeypatch.setenv("FRESHEN_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"FRESHEN_SECRETS_DIR.*not a folder"):
        load_settings()


def test_a_weak_password_in_a_settings_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "FRESHEN_REGISTRY_PASSWORD").write_text("freshen\n")
    monkeypatch.setenv("FRESHEN_SECRETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"FRESHEN_REGISTRY_PASSWORD.*known default"):
        load_settings()
