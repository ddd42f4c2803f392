"""select_newest on plain payloads: PEP 440 ordering, yanked, pre-releases, hostile versions."""

from __future__ import annotations

import pytest

from shared.adapters.pypi import select_newest
from shared.errors import InvalidInput, UpstreamError

pytestmark = pytest.mark.timeout(10)


def file(yanked: bool = False) -> dict[str, object]:
    return {"filename": "tool-x.tar.gz", "yanked": yanked, "yanked_reason": None}


def payload(*finals: str, **special: list[dict[str, object]]) -> dict[str, object]:
    """Releases with one good file each; `special` maps a version to its own file list."""
    releases: dict[str, object] = {v: [file()] for v in finals}
    releases.update(special)
    return {"info": {"name": "tool"}, "releases": releases}


def with_files(**files: list[dict[str, object]]) -> dict[str, object]:
    return {"releases": dict(files)}


def test_pep440_order_not_string_order() -> None:
    assert select_newest(payload("1.9.9", "1.10.0", "1.2.0"), "tool", False) == "1.10.0"


def test_result_is_normalized() -> None:
    assert select_newest(payload("1.0", "v2.0.0-post1"), "tool", False) == "2.0.0.post1"


def test_post_release_is_final() -> None:
    assert select_newest(payload("2.0.0", "2.0.0.post1"), "tool", False) == "2.0.0.post1"


def test_yanked_release_skipped() -> None:
    data = payload("1.0.0", **{"1.1.0": [file(yanked=True), file(yanked=True)]})
    assert select_newest(data, "tool", False) == "1.0.0"


def test_partly_yanked_release_still_counts() -> None:
    data = payload("1.0.0", **{"1.1.0": [file(yanked=True), file(yanked=False)]})
    assert select_newest(data, "tool", False) == "1.1.0"


def test_release_without_files_skipped() -> None:
    assert select_newest(payload("1.0.0", **{"1.1.0": []}), "tool", False) == "1.0.0"


@pytest.mark.parametrize("pre", ["2.0.0rc1", "2.0.0a1", "2.0.0b2", "2.0.0.dev3", "2.0.0rc1.dev1"])
def test_prerelease_skipped_unless_asked(pre: str) -> None:
    data = payload("1.0.0", pre)
    assert select_newest(data, "tool", False) == "1.0.0"
    assert select_newest(data, "tool", True) == pre


def test_prereleases_allowed_still_prefers_newer_final() -> None:
    assert select_newest(payload("2.0.0rc1", "2.0.0"), "tool", True) == "2.0.0"


@pytest.mark.parametrize(
    "hostile",
    ["1.0; rm -rf /", "1.0 && curl evil", "$(reboot)", "1.0\nFROM scratch", "9" * 70, "latest"],
)
def test_non_pep440_rejected_and_never_returned(hostile: str) -> None:
    assert select_newest(payload("1.0.0", hostile), "tool", True) == "1.0.0"


def test_only_hostile_versions_error_quotes_them_safely() -> None:
    data = payload("1.0; rm -rf /", "x\x1b[31mred", "a" * 500, "b", "c")
    with pytest.raises(UpstreamError) as caught:
        select_newest(data, "tool", False)
    message = str(caught.value)
    assert "5 not PEP 440" in message
    assert "'1.0; rm -rf /'" in message
    assert "\x1b" not in message and "\\x1b" in message  # control characters escaped
    assert "a" * 41 not in message  # truncated
    assert "'b'" not in message and "'c'" not in message  # at most three quoted


def test_no_qualifying_release_says_why() -> None:
    data = payload("2.0.0rc1", "nope", **{"1.0.0": [file(yanked=True)], "1.1.0": []})
    with pytest.raises(UpstreamError) as caught:
        select_newest(data, "tool", False)
    message = str(caught.value)
    assert "tool" in message
    for part in ("1 not PEP 440", "1 yanked", "1 pre-release", "1 without files"):
        assert part in message
    assert "pre-releases" in message  # suggests allowing them


def test_empty_releases() -> None:
    with pytest.raises(UpstreamError, match="tool lists no releases"):
        select_newest({"releases": {}}, "tool", False)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (None, "expected a JSON object"),
        ([], "expected a JSON object"),
        ("releases", "expected a JSON object"),
        ({}, "no 'releases' object"),
        ({"releases": []}, "no 'releases' object"),
        ({"releases": None}, "no 'releases' object"),
        ({"releases": {"1.0": None}}, "has no file list"),
        ({"releases": {"1.0": {"yanked": False}}}, "has no file list"),
        ({"releases": {"1.0": ["tool-1.0.tar.gz"]}}, "not an object"),
    ],
)
def test_malformed_payload(data: object, why: str) -> None:
    with pytest.raises(UpstreamError, match="malformed answer") as caught:
        select_newest(data, "tool", False)
    assert why in str(caught.value)


def test_invalid_project_name_rejected() -> None:
    with pytest.raises(InvalidInput):
        select_newest(payload("1.0.0"), "../etc", False)


def test_an_epoch_release_is_skipped_not_blocking_the_others() -> None:
    """`1!2.0` sorts above every release without an epoch but can never be an OCI tag: the
    newest taggable release is chosen instead of failing every check from now on."""
    assert select_newest(payload("1.0.0", "1!2.0", "1.1.0+local"), "tool", False) == "1.0.0"
    with pytest.raises(UpstreamError, match="1 with an epoch or local part"):
        select_newest(payload("1!2.0"), "tool", False)
