"""The release-age gate as pure functions: which release is old enough, which waits, what the
check records (once), and how the definition spells the age."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.adapters.pypiselect import select_offer
from shared.definitions import DefinitionFile, ImageDefinition, load_definition
from shared.errors import ConfigError, UpstreamError
from shared.model import events as ev
from shared.model.projection import ImageState, InvalidTransition, check_allowed, fold
from shared.model.releaseage import Offer, Offered, iso, parse_duration, pick, upload_time
from shared.stages.check import Upstream, decide_run

pytestmark = pytest.mark.timeout(10)

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
HOUR = 3600
DIGEST = "sha256:" + "b" * 64


def file(uploaded_s: float | None, yanked: bool = False) -> dict[str, object]:
    time = None if uploaded_s is None else iso(uploaded_s)
    return {"filename": "tool.tar.gz", "yanked": yanked, "upload_time_iso_8601": time}


def payload(**ages_h: float | None) -> dict[str, object]:
    """Releases (`v1_2_0` is 1.2.0) uploaded that many hours before NOW (None: no time)."""
    releases = {}
    for name, age in ages_h.items():
        releases[name[1:].replace("_", ".")] = [file(None if age is None else NOW - age * HOUR)]
    return {"releases": releases}


def offer(data: dict[str, object], age_h: float, prereleases: bool = False) -> Offer:
    return select_offer(data, "tool", prereleases, age_h * HOUR, NOW)


# --- selection -------------------------------------------------------------------------------


def test_the_newest_release_old_enough_is_the_candidate_and_the_newest_waits() -> None:
    data = payload(v1_0_0=48, v1_1_0=2, v1_2_0=0.5)
    got = offer(data, age_h=24)
    assert got.candidate == "1.0.0"
    assert got.waiting == Offered("1.2.0", NOW - HOUR // 2)
    assert got.until_s == NOW - HOUR // 2 + 24 * HOUR


def test_no_gate_builds_the_newest_whatever_its_age() -> None:
    assert offer(payload(v1_0_0=48, v1_1_0=0), age_h=0) == Offer("1.1.0")


def test_a_release_exactly_as_old_as_the_age_is_old_enough() -> None:
    assert offer(payload(v1_0_0=48, v1_1_0=1), age_h=1) == Offer("1.1.0")


def test_nothing_old_enough_offers_no_candidate_and_says_what_waits() -> None:
    got = offer(payload(v1_0_0=1), age_h=3)
    assert got.candidate == "" and got.waiting == Offered("1.0.0", NOW - HOUR)


def test_age_is_the_earliest_files_upload_time() -> None:
    files = [file(NOW - 2 * HOUR), file(NOW - 30 * HOUR), {"upload_time_iso_8601": "garbage"}]
    assert upload_time(files) == NOW - 30 * HOUR
    assert offer({"releases": {"1.0.0": files}}, age_h=24) == Offer("1.0.0")


def test_upload_times_are_rounded_up_never_early() -> None:
    assert upload_time([{"upload_time_iso_8601": "2027-01-15T08:00:00.000001Z"}]) == NOW + 1
    assert upload_time([{"upload_time_iso_8601": "2027-01-15T08:00:00"}]) is None  # no zone


def test_a_yanked_young_release_never_waits_and_is_never_built_when_old() -> None:
    young_yanked = {"1.0.0": [file(NOW - 48 * HOUR)], "1.1.0": [file(NOW, yanked=True)]}
    assert offer({"releases": young_yanked}, age_h=1) == Offer("1.0.0")
    old_yanked = {"1.0.0": [file(NOW - 48 * HOUR)], "1.1.0": [file(NOW - 5 * HOUR, yanked=True)]}
    assert offer({"releases": old_yanked}, age_h=1) == Offer("1.0.0")


def test_prereleases_stay_out_unless_asked_and_then_obey_the_age() -> None:
    data = payload(v1_0_0=48, v2_0_0rc1=0)
    assert offer(data, age_h=1) == Offer("1.0.0")  # the young pre-release does not even wait
    got = offer(data, age_h=1, prereleases=True)
    assert got.candidate == "1.0.0" and got.waiting == Offered("2.0.0rc1", NOW)


def test_untaggable_and_non_pep440_releases_never_wait() -> None:
    data = {"releases": {"1.0.0": [file(NOW - 48 * HOUR)], "1!2.0": [file(NOW)], "x": [file(NOW)]}}
    assert offer(data, age_h=1) == Offer("1.0.0")


def test_pep440_order_decides_with_upload_order_mixed() -> None:
    """A backport uploaded after the newer line: the newest version old enough wins."""
    data = payload(v2_0_0=30, v1_9_9=25, v2_0_1=1)
    assert offer(data, age_h=24).candidate == "2.0.0"


def test_a_release_without_upload_time_is_an_error_only_where_it_matters() -> None:
    with pytest.raises(UpstreamError, match=r"tool: release 1\.1\.0 has no upload time"):
        offer(payload(v1_0_0=48, v1_1_0=None), age_h=1)
    assert offer(payload(v1_0_0=None, v1_1_0=5), age_h=1) == Offer("1.1.0")  # below the pick
    assert offer(payload(v1_0_0=None), age_h=0) == Offer("1.0.0")  # no gate: not needed


def test_a_list_cut_short_before_an_old_enough_release_cannot_decide() -> None:
    young = [Offered("1.2.0", NOW), Offered("1.1.0", NOW)]
    assert pick(young, HOUR, NOW, complete=False, project="tool") is None
    assert pick(young, HOUR, NOW, complete=True, project="tool") == Offer("", young[0], NOW + HOUR)


# --- what the check records ------------------------------------------------------------------


def definition() -> ImageDefinition:
    spec = DefinitionFile.model_validate(
        {"source": {"pypi": "tool"}, "base": {"image": "b/c:d"}, "target": {"repository": "t/x"}}
    )
    return ImageDefinition("tool", Path("/nonexistent"), spec)


def decided(state: ImageState, got: Offer) -> list[ev.Event]:
    """What a check appends when PyPI offers `got`."""
    return decide_run(state, definition(), Upstream(got.candidate, DIGEST, got), "check", False)


def check_once(state: ImageState, got: Offer) -> ImageState:
    """`state` after a check appended what it decided; every event allowed by the model."""
    new = decided(state, got)
    records = [ev.Recorded("tool", state.position + i, "t", e) for i, e in enumerate(new)]
    after = fold("tool", records, state)
    assert after.refused == 0
    return after


def test_a_waiting_release_is_recorded_once_then_built_when_old_enough() -> None:
    young = Offered("1.1.0", NOW)
    waiting = Offer("1.0.0", young, NOW + HOUR)
    state = check_once(ImageState("tool"), waiting)
    assert state.waiting is not None
    assert (state.waiting.tool_version, state.waiting.until) == ("1.1.0", iso(NOW + HOUR))
    assert [r.tool_version for r in state.runs.values()] == ["1.0.0"]
    assert decided(state, waiting) == []  # the next check: no event spam
    ready = Offer("1.1.0")
    assert [type(e).__name__ for e in decided(state, ready)] == [
        "ReleaseWaitEnded",
        "ReleaseDetected",
    ]
    state = check_once(state, ready)
    assert state.waiting is None and len(state.runs) == 2


def test_a_waiting_release_yanked_ends_its_wait_as_withdrawn_and_is_never_built() -> None:
    state = check_once(ImageState("tool"), Offer("1.0.0", Offered("1.1.0", NOW), NOW + HOUR))
    ended = decided(state, Offer("1.0.0"))
    assert ended == [ev.ReleaseWaitEnded("1.1.0", "withdrawn")]
    state = check_once(state, Offer("1.0.0"))
    assert state.waiting is None and [r.tool_version for r in state.runs.values()] == ["1.0.0"]


def test_a_forced_run_of_the_waiting_release_ends_the_wait_and_it_is_not_recorded_again() -> None:
    got = Offer("", Offered("1.1.0", NOW), NOW + HOUR)
    state = check_once(ImageState("tool"), got)
    forced = decide_run(state, definition(), Upstream("1.1.0", DIGEST), "forced", True)
    state = fold("tool", [ev.Recorded("tool", state.position, "t", e) for e in forced], state)
    assert state.waiting is None
    assert decided(state, got) == []


def test_a_newer_release_forced_past_the_waiting_one_ends_its_wait_as_superseded() -> None:
    state = check_once(ImageState("tool"), Offer("", Offered("1.1.0", NOW), NOW + HOUR))
    forced = decide_run(state, definition(), Upstream("1.2.0", DIGEST), "forced", True)
    state = fold("tool", [ev.Recorded("tool", state.position, "t", e) for e in forced], state)
    got = Offer("", Offered("1.2.0", NOW + 60), NOW + HOUR + 60)
    assert decided(state, got) == [ev.ReleaseWaitEnded("1.1.0", "superseded")]


def test_a_newer_young_release_replaces_the_waiting_one() -> None:
    state = check_once(ImageState("tool"), Offer("", Offered("1.1.0", NOW), NOW + HOUR))
    newer = Offer("", Offered("1.2.0", NOW + 60), NOW + HOUR + 60)
    assert [type(e) for e in decided(state, newer)] == [ev.ReleaseWaiting]
    assert check_once(state, newer).waiting.tool_version == "1.2.0"  # type: ignore[union-attr]


def test_the_model_refuses_a_repeated_wait_and_ending_a_wait_that_is_not() -> None:
    state = ImageState("tool")
    with pytest.raises(InvalidTransition, match="not waiting"):
        check_allowed(state, ev.ReleaseWaitEnded("1.1.0", "old enough"))
    waits = ev.ReleaseWaiting("1.1.0", iso(NOW), iso(NOW + HOUR))
    state = fold("tool", [ev.Recorded("tool", 0, "t", waits)], state)
    with pytest.raises(InvalidTransition, match="already waits"):
        check_allowed(state, waits)


# --- the definition --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("3d", 259200), ("12h", 43200), ("90m", 5400), ("45s", 45), (3600, 3600), ("PT2H", 7200)],
)
def test_durations_image_toml_accepts(raw: object, seconds: int) -> None:
    assert parse_duration(raw) == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["soon", "-1h", -5, True, "3x", ""])
def test_a_bad_age_is_a_definition_error_naming_image_file_and_field(
    tmp_path: Path, raw: object
) -> None:
    folder = tmp_path / "awscli"
    folder.mkdir()
    value = f'"{raw}"' if isinstance(raw, str) else str(raw).lower()
    (folder / "image.toml").write_text(
        f'[source]\npypi = "awscli"\nmin_release_age = {value}\n[base]\nimage = "b/c:d"\n'
        '[target]\nrepository = "t/awscli"\n'
    )
    with pytest.raises(ConfigError, match=r"awscli/image\.toml: source\.min_release_age: "):
        load_definition(folder)


def test_the_age_is_off_by_default() -> None:
    assert definition().spec.source.min_release_age_s == 0
