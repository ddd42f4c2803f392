"""Tag policy: which tags a build gets and which may move (pure)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from shared.errors import InvalidInput
from shared.tagpolicy import plan, release_tags


def tags(version: str) -> list[str]:
    return release_tags(Version(version), "alpine", "3.22.2", minor=True, latest=True, os=True)


def test_a_release_gets_exact_os_minor_and_latest_tags() -> None:
    assert tags("1.46.3") == ["1.46.3", "1.46.3-alpine3.22.2", "1.46", "latest"]


def test_prereleases_never_get_moving_tags() -> None:
    assert tags("2.0.0rc1") == ["2.0.0rc1", "2.0.0rc1-alpine3.22.2"]


def test_policy_switches_drop_tags() -> None:
    out = release_tags(Version("1.2.3"), "debian", "12.12", minor=False, latest=False, os=True)
    assert out == ["1.2.3", "1.2.3-debian12.12"]


def test_versions_that_make_no_valid_tag_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        tags("1!1.0")  # epochs have no place in an OCI tag
    with pytest.raises(InvalidInput):
        tags("1.0+local")


def test_latest_and_minor_never_move_backward() -> None:
    current = {"latest": "1.46.3", "1.46": "1.46.3", "1.46.3": "1.46.3"}
    out = plan(Version("1.46.2"), ["1.46.2", "1.46", "latest"], current)
    assert out.move == ("1.46.2",)
    assert out.keep == ("1.46", "latest")


def test_older_minor_gets_its_own_minor_tag_but_not_latest() -> None:
    current = {"latest": "1.46.3", "1.46": "1.46.3"}
    out = plan(Version("1.45.9"), ["1.45.9", "1.45", "latest"], current)
    assert out.move == ("1.45.9", "1.45")
    assert out.keep == ("latest",)


def test_same_version_rebuild_moves_everything() -> None:
    current = {"latest": "1.46.3", "1.46": "1.46.3", "1.46.3": "1.46.3"}
    out = plan(Version("1.46.3"), ["1.46.3", "1.46", "latest"], current)
    assert out.move == ("1.46.3", "1.46", "latest") and out.keep == ()


def test_version_order_is_pep440_not_string_order() -> None:
    out = plan(Version("1.10.0"), ["latest"], {"latest": "1.9.9"})
    assert out.move == ("latest",)
