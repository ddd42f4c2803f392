"""Reading what freshen's containers print: a test script's step log and an image's OS release.

Pure parsing of plain text and bytes; the Engine that runs the containers lives in shared.engine.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shared.errors import StageError
from shared.secrets import neutralize

# One output line longer than this is cut, so a script printing binary cannot exhaust memory.
MAX_LINE_CHARS = 64 * 1024
# The test script's step protocol (see images/awscli/test.sh).
STEP_BEGIN = "::freshen-step-begin"
STEP_END = "::freshen-step-end"
# The shell function a test script calls to report each step in that protocol
# (`step NAME COMMAND...`); scripts written in code start with it.
STEP_FUNCTION = f"""step() {{
  name=$1
  shift
  echo "{STEP_BEGIN} $name"
  "$@"
  rc=$?
  echo
  echo "{STEP_END} $name $rc"
  return "$rc"
}}
"""
# Prints the OS release files parse_os_release reads, in its marker-separated layout.
READ_OS_SCRIPT = (
    "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; "
    "echo; echo ::alpine-release; cat /etc/alpine-release 2>/dev/null; "
    "echo; echo ::debian_version; cat /etc/debian_version 2>/dev/null; true"
)
_OS_ID = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")
_OS_VERSION = re.compile(r"[0-9][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)*")


@dataclass(frozen=True)
class StepResult:
    """One `step NAME …` of a test script."""

    name: str
    exit_code: int
    output_tail: str


@dataclass(frozen=True)
class TestOutcome:
    """What a test container did; `failed_step` is a step name, "timeout" or "script"."""

    __test__ = False  # not a pytest test class

    passed: bool
    exit_code: int | None
    steps: tuple[StepResult, ...]
    failed_step: str | None
    output_tail: str


def join_tail(lines: Iterable[str]) -> str:
    """Lines joined into one quotable text, without leading or trailing blank lines."""
    return "\n".join(lines).strip("\n")


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split a byte stream into text lines, whatever the chunk boundaries; control characters
    come out as visible escapes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        yield from (neutralize(line.rstrip("\r")) for line in complete)
        if len(pending) > MAX_LINE_CHARS:
            yield neutralize(pending[:MAX_LINE_CHARS])
            pending = ""
    pending += decoder.decode(b"", final=True)
    if pending:
        yield neutralize(pending)


class StepLog:
    """Folds a test's output, line by line, into step results and bounded tails."""

    def __init__(self, tail_lines: int) -> None:
        self.whole: deque[str] = deque(maxlen=tail_lines)
        self.steps: list[StepResult] = []
        self._tail_lines = tail_lines
        self._current: str | None = None
        self._step_tail: deque[str] = deque(maxlen=tail_lines + 1)  # +1: the step's blank echo

    def append(self, line: str) -> None:
        self.whole.append(line)
        words = line.split()
        if len(words) == 2 and words[0] == STEP_BEGIN:
            self._current = words[1]
            self._step_tail.clear()
        elif (
            len(words) == 3
            and words[0] == STEP_END
            and words[1] == self._current
            and re.fullmatch(r"-?\d{1,4}", words[2])
        ):
            tail = list(self._step_tail)
            while tail and not tail[-1].strip():
                tail.pop()
            step = StepResult(words[1], int(words[2]), join_tail(tail[-self._tail_lines :]))
            self.steps.append(step)
            self._current = None
        elif self._current is not None:
            self._step_tail.append(line)

    def outcome(self, exit_code: int | None) -> TestOutcome:
        """The outcome for the container's exit code (None: killed at the time limit)."""
        failed = next((s.name for s in self.steps if s.exit_code != 0), None)
        if failed is None and exit_code != 0:
            failed = "timeout" if exit_code is None else "script"
        steps = tuple(self.steps)
        return TestOutcome(failed is None, exit_code, steps, failed, join_tail(self.whole))


def parse_os_release(output: str, image: str) -> tuple[str, str]:
    """(id, version) from READ_OS_SCRIPT's output; both safe in a tag suffix."""
    release, _, rest = output.partition("::alpine-release")
    alpine, _, debian = rest.partition("::debian_version")
    fields: dict[str, str] = {}
    for line in release.splitlines():
        key, eq, value = line.strip().partition("=")
        if eq:
            fields[key] = value.strip().strip("\"'")
    os_id, version = fields.get("ID", "").lower(), fields.get("VERSION_ID", "")
    alpine, debian = alpine.strip(), debian.strip()
    if os_id == "alpine" and alpine:
        version = alpine
    elif os_id == "debian" and re.fullmatch(r"\d+(?:\.\d+)+", debian):
        version = debian
    if not (_OS_ID.fullmatch(os_id) and _OS_VERSION.fullmatch(version) and len(version) < 32):
        raise StageError(
            image,
            "build",
            f"cannot tell the OS of the built image (ID={os_id[:40]!r}, version={version[:40]!r});"
            " set target.os = false in image.toml or use a base with /etc/os-release",
        )
    return os_id, version
