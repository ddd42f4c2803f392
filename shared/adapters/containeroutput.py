"""Reading what freshen's test containers print: a test script's step log.

Pure parsing of plain text and bytes; the Engine that runs the containers lives in
shared.adapters.engine.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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
