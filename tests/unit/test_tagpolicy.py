"""Tag policy: which tags a build gets and which may move (pure)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from shared.errors import InvalidInput
from shared.model.tagpolicy import order_key, plan, release_tags


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


def o(version: str, seq: int = 0) -> tuple[Version, int]:
    """A run's place in the order: tool version, then when its inputs were detected."""
    return order_key(version, seq)


def test_latest_and_minor_never_move_backward() -> None:
    current = {"latest": o("1.46.3"), "1.46": o("1.46.3"), "1.46.3": o("1.46.3")}
    out = plan(o("1.46.2", 9), ["1.46.2", "1.46", "latest"], current)
    assert out.move == ("1.46.2",)
    assert out.keep == ("1.46", "latest")


def test_older_minor_gets_its_own_minor_tag_but_not_latest() -> None:
    current = {"latest": o("1.46.3"), "1.46": o("1.46.3")}
    out = plan(o("1.45.9", 5), ["1.45.9", "1.45", "latest"], current)
    assert out.move == ("1.45.9", "1.45")
    assert out.keep == ("latest",)


def test_same_version_on_a_newer_base_moves_every_tag() -> None:
    current = {"latest": o("1.46.3", 0), "1.46": o("1.46.3", 0), "1.46.3": o("1.46.3", 0)}
    out = plan(o("1.46.3", 7), ["1.46.3", "1.46", "latest"], current)
    assert out.move == ("1.46.3", "1.46", "latest") and out.keep == ()


def test_same_version_on_an_older_base_moves_no_tag_a_newer_base_holds() -> None:
    """The bug of the first version: whichever run of a release promoted last took its tags."""
    current = {"latest": o("1.46.3", 7), "1.46": o("1.46.3", 7), "1.46.3": o("1.46.3", 7)}
    out = plan(o("1.46.3", 0), ["1.46.3", "1.46.3-debian12.1", "1.46", "latest"], current)
    assert out.move == ("1.46.3-debian12.1",)  # the tag no later run holds
    assert out.keep == ("1.46.3", "1.46", "latest")


def test_a_run_never_moves_a_tag_to_itself_again() -> None:
    out = plan(o("1.0.0", 3), ["latest"], {"latest": o("1.0.0", 3)})
    assert out.move == () and out.keep == ("latest",)


def test_version_order_is_pep440_not_string_order() -> None:
    out = plan(o("1.10.0"), ["latest"], {"latest": o("1.9.9", 99)})
    assert out.move == ("latest",)
