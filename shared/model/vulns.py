"""The vulnerability gate's rules, as pure functions: which files of an image are installed Python
distributions, what their metadata says, what the index's `vulnerabilities` mean, and what an
image's policy makes of them. The image's files are read by shared/adapters/engine.py, the index by
shared/adapters/vulnindex.py; shared/stages/verify.py applies the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import Any

from packaging.utils import canonicalize_name

from shared.definitions import VulnerabilitiesSection
from shared.model.events import VulnerabilityFinding
from shared.secrets import neutralize

# Folders whose direct sub-folders are installed distributions, whatever the layout: the system
# Python, /usr/local, a venv, a user site (`…/lib/python3.X/site-packages`) or Debian's.
_SITE_DIRS = frozenset({"site-packages", "dist-packages"})
# A distribution's name as its metadata may spell it (PEP 508 names).
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
# A version as it may go into a URL path: PEP 440 and the legacy forms pip still installs.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}")
# Longest upstream text (summary, link) kept in a finding.
_TEXT_CHARS = 200


@dataclass(frozen=True, order=True)
class Installed:
    """One distribution installed in the image (from its METADATA or PKG-INFO)."""

    name: str
    version: str
    path: str  # the metadata file it was read from


@dataclass(frozen=True)
class Advisory:
    """One entry of the index's `vulnerabilities` for a (name, version)."""

    id: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]
    link: str = ""
    summary: str = ""


@dataclass(frozen=True)
class Lookup:
    """What the index says about one installed distribution; `advisories` None: no data (the
    index does not know the project or this version)."""

    package: Installed
    advisories: tuple[Advisory, ...] | None


@dataclass(frozen=True)
class Verdict:
    """The policy applied to the lookups of one candidate."""

    findings: tuple[VulnerabilityFinding, ...]  # applying ones and ignored ones (with reason)
    no_data: tuple[str, ...]
    blocked: bool
    summary: str

    @property
    def applying(self) -> tuple[VulnerabilityFinding, ...]:
        return tuple(f for f in self.findings if not f.ignored)


def is_metadata_file(path: str) -> bool:
    """Whether `path` (inside an image) is the metadata of an installed distribution:
    `<site>/<x>.dist-info/METADATA`, `<site>/<x>.egg-info/PKG-INFO` or `<site>/<x>.egg-info`
    (a file), `<site>` being a site-packages or dist-packages folder."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[-3] in _SITE_DIRS:
        return (parts[-2].endswith(".dist-info") and parts[-1] == "METADATA") or (
            parts[-2].endswith(".egg-info") and parts[-1] == "PKG-INFO"
        )
    return len(parts) >= 2 and parts[-2] in _SITE_DIRS and parts[-1].endswith(".egg-info")


def parse_metadata(text: str, path: str) -> Installed | None:
    """Name and Version from core metadata headers; None when either is missing or unusable
    (the file is not trusted: a name or version that could bend a URL is dropped)."""
    headers = HeaderParser().parsestr(text.split("\n\n", 1)[0], headersonly=True)
    name, version = (str(headers.get(h, "")).strip() for h in ("Name", "Version"))
    if not _NAME.fullmatch(name) or not _VERSION.fullmatch(version):
        return None
    return Installed(name, version, path)


def unique(found: Iterable[Installed]) -> list[Installed]:
    """One entry per (canonical name, version), sorted by name: a distribution installed in two
    places (a venv and the system) is looked up once."""
    seen: dict[tuple[str, str], Installed] = {}
    for item in sorted(found):
        seen.setdefault((canonicalize_name(item.name), item.version), item)
    return sorted(seen.values(), key=lambda i: (canonicalize_name(i.name), i.version))


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(neutralize(v)[:_TEXT_CHARS] for v in value if isinstance(v, str) and v)


def advisories(payload: Any) -> tuple[Advisory, ...]:
    """The `vulnerabilities` of a PyPI JSON API answer; withdrawn ones are left out (as
    pip-audit does). A malformed entry is a ValueError."""
    entries = payload.get("vulnerabilities") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the answer has no `vulnerabilities` list")
    found: list[Advisory] = []
    known: set[str] = set()  # ids and aliases of the entries kept: PYSEC and GHSA of one flaw
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ValueError("a `vulnerabilities` entry has no id")
        names = {entry["id"], *_strings(entry.get("aliases"))}
        if entry.get("withdrawn") or entry["id"] in known:
            continue
        known |= names
        text = entry.get("summary") or entry.get("details") or ""
        first = str(text).strip().splitlines()[0] if str(text).strip() else ""
        link = entry.get("link") if isinstance(entry.get("link"), str) else ""
        found.append(
            Advisory(
                id=neutralize(entry["id"])[:_TEXT_CHARS],
                aliases=_strings(entry.get("aliases")),
                fixed_in=_strings(entry.get("fixed_in")),
                link=neutralize(str(link))[:_TEXT_CHARS],
                summary=neutralize(first)[:_TEXT_CHARS],
            )
        )
    return tuple(found)


def _ignored_reason(advisory: Advisory, policy: VulnerabilitiesSection) -> str:
    """The image's reason for ignoring this advisory (by its id or an alias), or ""."""
    names = {advisory.id.upper(), *(a.upper() for a in advisory.aliases)}
    return next((i.reason for i in policy.ignore if i.id.upper() in names), "")


def evaluate(lookups: Sequence[Lookup], policy: VulnerabilitiesSection) -> Verdict:
    """Findings, ignored ones with their reason, packages without data, and whether the policy
    stops the run (`block` and at least one finding that is not ignored)."""
    findings = []
    for lookup in lookups:
        for adv in lookup.advisories or ():
            findings.append(
                VulnerabilityFinding(
                    adv.id, lookup.package.name, lookup.package.version, adv.fixed_in,
                    adv.aliases, adv.link, adv.summary, _ignored_reason(adv, policy),
                )
            )  # fmt: skip
    no_data = tuple(sorted(lookup.package.name for lookup in lookups if lookup.advisories is None))
    applying = [f for f in findings if not f.ignored]
    blocked = policy.policy == "block" and bool(applying)
    return Verdict(tuple(findings), no_data, blocked, _summary(len(lookups), findings, no_data))


def describe(finding: VulnerabilityFinding) -> str:
    """`PYSEC-2018-28 in requests 2.19.0 (fixed in 2.20.0)`."""
    fixed = ", ".join(finding.fixed_in) if finding.fixed_in else "no fixed version yet"
    return f"{finding.id} in {finding.package} {finding.installed} (fixed in: {fixed})"


def _summary(
    packages: int, findings: Sequence[VulnerabilityFinding], no_data: Sequence[str]
) -> str:
    applying = [describe(f) for f in findings if not f.ignored]
    ignored = [f"{f.id} in {f.package} ({f.ignored})" for f in findings if f.ignored]
    parts = [_count(packages, "Python distribution") + " checked"]
    parts.append(
        f"{_count(len(applying), 'known vulnerability')}: {'; '.join(applying)}"
        if applying
        else "no known vulnerability"
    )
    if ignored:
        parts.append(f"ignored: {'; '.join(ignored)}")
    if no_data:
        parts.append(f"no vulnerability data for {len(no_data)}: {', '.join(no_data)}")
    return "; ".join(parts)


def _count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {noun if number == 1 else plural}"


def block_message(verdict: Verdict, version: str) -> str:
    """Why a run is not promoted, and what to do about it."""
    found = "; ".join(describe(f) for f in verdict.applying)
    return (
        f"{version} has known vulnerabilities: {found}; policy block: not promoted. Upgrade the "
        "package (Dockerfile), or ignore the id with a reason in image.toml [vulnerabilities]"
    )
