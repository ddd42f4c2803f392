"""Reading a test container's step log and an image's OS release (pure)."""

from __future__ import annotations

import io
import tarfile

import pytest

from shared.adapters.containeroutput import (
    MAX_LINE_CHARS,
    STEP_BEGIN,
    STEP_END,
    StepLog,
    StepResult,
    split_lines,
)
from shared.adapters.imagefiles import (
    ALPINE_RELEASE,
    DEBIAN_VERSION,
    MAX_OS_FILE_BYTES,
    OS_RELEASE,
    OS_RELEASE_FALLBACK,
    parse_os_release,
    read_small_file,
)
from shared.errors import StageError

IMAGE = "awscli"


def step(name: str, output: list[str], exit_code: int) -> list[str]:
    """What images/awscli/test.sh prints for one step, the blank echo before the end included."""
    return [f"{STEP_BEGIN} {name}", *output, "", f"{STEP_END} {name} {exit_code}"]


def fold(lines: list[str], tail_lines: int = 20) -> StepLog:
    log = StepLog(tail_lines)
    for line in lines:
        log.append(line)
    return log


def os_output(os_release: str, alpine: str = "", debian: str = "") -> dict[str, str]:
    """The OS release files' texts as read from an image ("" for a missing file)."""
    files = {OS_RELEASE: os_release, ALPINE_RELEASE: alpine, DEBIAN_VERSION: debian}
    return files | {OS_RELEASE_FALLBACK: ""}


def test_markers_become_steps_with_exit_codes_and_tails() -> None:
    log = fold(step("aws-version", ["aws-cli/1.46.3"], 0) + step("s3-ls", ["bucket-a"], 0))
    outcome = log.outcome(0)
    assert outcome.steps == (
        StepResult("aws-version", 0, "aws-cli/1.46.3"),
        StepResult("s3-ls", 0, "bucket-a"),
    )
    assert (outcome.passed, outcome.exit_code, outcome.failed_step) == (True, 0, None)


def test_a_step_tail_keeps_only_the_last_lines() -> None:
    output = [f"line {i}" for i in range(10)]
    outcome = fold(step("noisy", output, 0), tail_lines=3).outcome(0)
    assert outcome.steps[0].output_tail == "line 7\nline 8\nline 9"
    assert outcome.output_tail.splitlines() == ["line 9", "", f"{STEP_END} noisy 0"]


def test_output_outside_steps_is_in_the_whole_tail_only() -> None:
    lines = ["preparing", *step("fine", ["ok"], 0), "cleaning up"]
    outcome = fold(lines).outcome(0)
    assert outcome.steps == (StepResult("fine", 0, "ok"),)
    assert outcome.output_tail.startswith("preparing\n") and outcome.output_tail.endswith("up")


def test_the_first_failing_step_is_named() -> None:
    lines = step("first", ["ok"], 0) + step("second", ["boom"], 3) + step("third", [], 1)
    outcome = fold(lines).outcome(1)
    assert not outcome.passed
    assert outcome.failed_step == "second"
    assert [(s.name, s.exit_code) for s in outcome.steps] == [
        ("first", 0),
        ("second", 3),
        ("third", 1),
    ]


def test_a_step_begun_but_never_ended_is_no_step() -> None:
    lines = [*step("fine", ["ok"], 0), f"{STEP_BEGIN} nap", "napping"]
    killed = fold(lines).outcome(None)
    assert killed.steps == (StepResult("fine", 0, "ok"),)
    assert (killed.passed, killed.exit_code, killed.failed_step) == (False, None, "timeout")
    assert killed.output_tail.endswith("napping")
    assert fold(lines).outcome(2).failed_step == "script"


def test_malformed_or_mismatched_end_markers_are_output() -> None:
    lines = [
        f"{STEP_BEGIN} real",
        f"{STEP_END} other 0",  # not the open step
        f"{STEP_END} real twelve",  # not an exit code
        f"{STEP_END} real 0",
    ]
    (only,) = fold(lines).outcome(0).steps
    assert only.name == "real"
    assert only.output_tail == f"{STEP_END} other 0\n{STEP_END} real twelve"


def test_lines_are_split_whatever_the_chunk_boundaries() -> None:
    data = "ok\r\nü€ line\nlast".encode()
    whole = list(split_lines([data]))
    assert whole == ["ok", "ü€ line", "last"]
    assert list(split_lines(data[i : i + 1] for i in range(len(data)))) == whole
    cut = data.index("€".encode()) + 1  # inside the three bytes of "€"
    assert list(split_lines([data[:cut], data[cut:]])) == whole


def test_invalid_utf8_is_replaced_and_overlong_lines_are_cut() -> None:
    assert list(split_lines([b"bad \xff byte\n"])) == ["bad \ufffd byte"]
    lines = list(split_lines([b"x" * (MAX_LINE_CHARS + 10), b"\nnext"]))
    assert lines[0] == "x" * MAX_LINE_CHARS and lines[-1] == "next"
    assert max(len(line) for line in lines) == MAX_LINE_CHARS


def test_os_release_falls_back_to_usr_lib() -> None:
    files = os_output("", debian="12.12") | {OS_RELEASE_FALLBACK: 'ID=debian\nVERSION_ID="12"'}
    assert parse_os_release(files, IMAGE) == ("debian", "12.12")


def test_alpine_uses_alpine_release() -> None:
    release = 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.22.2\nPRETTY_NAME="Alpine v3.22"'
    assert parse_os_release(os_output(release, alpine="3.22.2"), IMAGE) == ("alpine", "3.22.2")


def test_debian_uses_debian_version_when_it_is_a_version() -> None:
    release = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"'
    assert parse_os_release(os_output(release, debian="12.12"), IMAGE) == ("debian", "12.12")


def test_debian_testing_falls_back_to_version_id() -> None:
    release = 'ID=debian\nVERSION_ID="13"'
    assert parse_os_release(os_output(release, debian="trixie/sid"), IMAGE) == ("debian", "13")


def test_ubuntu_uses_version_id() -> None:
    release = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"'
    output = os_output(release, debian="trixie/sid")
    assert parse_os_release(output, IMAGE) == ("ubuntu", "24.04")


@pytest.mark.parametrize(
    "release",
    [
        "",  # no os-release at all
        "ID=alpine",  # no version
        'ID="Bad Id"\nVERSION_ID=1',
        "ID=debian\nVERSION_ID=latest",  # a version starts with a digit
        "ID=debian\nVERSION_ID=1-2",
        "ID=debian\nVERSION_ID=1." + "1" * 40,  # too long for a tag suffix
    ],
)
def test_unusable_ids_and_versions_are_a_build_error(release: str) -> None:
    with pytest.raises(StageError, match="cannot tell the OS") as caught:
        parse_os_release(os_output(release), IMAGE)
    assert (caught.value.image, caught.value.stage) == (IMAGE, "build")
    assert "target.os = false" in str(caught.value)


def archive_answer(name: str, data: bytes | None) -> list[bytes]:
    """What the Engine's archive endpoint sends for one path: a file, or (None) a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        if data is None:
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
            inner = tarfile.TarInfo(f"{name}/ID")
            inner.size = 9
            archive.addfile(inner, io.BytesIO(b"ID=hidden"))
        else:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return [raw[i : i + 500] for i in range(0, len(raw), 500)]


def test_only_a_small_regular_file_is_read_from_an_archive_answer() -> None:
    assert read_small_file(archive_answer("os-release", b"ID=debian\n")) == "ID=debian\n"
    assert read_small_file(archive_answer("os-release", None)) == ""  # a folder in its place
    too_big = b"ID=x\n" * (MAX_OS_FILE_BYTES // 5 + 1)
    assert read_small_file(archive_answer("os-release", too_big)) == ""
