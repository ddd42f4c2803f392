"""Events of a run's stages: build, test, vulnerability gate, promote (its plan and tags), the
versions commit, and the run's completion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shared.model.pipeline import Cause


@dataclass(frozen=True)
class StepRecord:
    """One command of an image test: its name, exit code and the tail of its output."""

    name: str
    exit_code: int
    output_tail: str


@dataclass(frozen=True)
class BuildStarted:
    run_id: str
    attempt: str


@dataclass(frozen=True)
class BuildSucceeded:
    """The candidate was built and pushed as develop; `digest` is what the test stage tests."""

    run_id: str
    digest: str
    os_id: str
    os_version: str


@dataclass(frozen=True)
class BuildFailed:
    """Version 2 added `cause` (version 1 failures read as definite)."""

    VERSION: ClassVar[int] = 2
    run_id: str
    error: str
    cause: Cause = Cause.DEFINITE
    stage: str = "build"


@dataclass(frozen=True)
class TestStarted:
    __test__: ClassVar[bool] = False  # not a pytest class
    run_id: str
    attempt: str


@dataclass(frozen=True)
class TestsPassed:
    __test__: ClassVar[bool] = False
    run_id: str
    digest: str
    results: tuple[StepRecord, ...]


@dataclass(frozen=True)
class TestsFailed:
    __test__: ClassVar[bool] = False
    run_id: str
    digest: str
    failed_command: str
    output_tail: str
    results: tuple[StepRecord, ...] = ()
    stage: str = "test"
    cause: Cause = Cause.DEFINITE  # version 2: a test stage lost to infrastructure, not a test
    VERSION: ClassVar[int] = 2


@dataclass(frozen=True)
class VulnerabilityFinding:
    """A published vulnerability of a distribution installed in the candidate (PyPI's JSON API
    `vulnerabilities`); `ignored` holds the image.toml reason when the image ignores its id."""

    id: str  # e.g. PYSEC-2018-28 or GHSA-x84v-xcm2-53pg
    package: str  # the distribution's name as installed
    installed: str  # its installed version
    fixed_in: tuple[str, ...]  # versions that fix it (may be empty: no fix yet)
    aliases: tuple[str, ...] = ()  # e.g. CVE ids
    link: str = ""
    summary: str = ""
    ignored: str = ""


@dataclass(frozen=True)
class VulnerabilitiesChecked:
    """The distributions installed in the run's candidate were looked up in the vulnerability
    data before promotion. `findings` are those that apply (ignored ones carry their reason);
    `policy` is the image's (block, warn); `blocked` says the run stops here; `no_data` lists
    the packages the index knows nothing about; `unreadable` says why the data could not be
    read (then a `block` policy fails closed)."""

    run_id: str
    digest: str
    tool_version: str
    policy: str
    packages: int  # distributions found in the image
    findings: tuple[VulnerabilityFinding, ...]
    no_data: tuple[str, ...] = ()
    blocked: bool = False
    unreadable: str = ""
    summary: str = ""


@dataclass(frozen=True)
class PromotionStarted:
    run_id: str
    attempt: str


@dataclass(frozen=True)
class TagMove:
    """One tag of a promotion plan: where it pointed when planned and where it goes."""

    tag: str
    from_digest: str  # "" when the tag did not exist
    to_digest: str


@dataclass(frozen=True)
class PromotionPlanned:
    """Written before the first manifest PUT: a resumed promotion rolls this plan forward."""

    run_id: str
    attempt: str
    moves: tuple[TagMove, ...]
    keep: tuple[str, ...]


@dataclass(frozen=True)
class Promoted:
    """Tags now point at the tested `digest`; `kept` tags stayed (they point at a newer version)."""

    run_id: str
    digest: str
    tool_version: str
    tags: tuple[str, ...]
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromotionFailed:
    """Version 2 added `cause` (version 1 failures read as definite)."""

    VERSION: ClassVar[int] = 2
    run_id: str
    error: str
    cause: Cause = Cause.DEFINITE
    stage: str = "promote"


@dataclass(frozen=True)
class VersionsCommitted:
    run_id: str
    commit: str
    tag: str


@dataclass(frozen=True)
class RunCompleted:
    run_id: str
