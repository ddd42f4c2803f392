"""The vulnerability gate's pure parts: which files of an image are installed distributions and
what they say, what the index's `vulnerabilities` mean, and what each policy decides."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from shared.adapters.imagefiles import read_distributions
from shared.definitions import DefinitionError, VulnerabilitiesSection, load_definition
from shared.model.aggregate import RunState
from shared.model.vulns import (
    Advisory,
    Installed,
    Lookup,
    advisories,
    block_message,
    evaluate,
    is_metadata_file,
    parse_metadata,
)
from shared.stages.vulngate import Scan, checked

pytestmark = pytest.mark.timeout(10)

VENV = "opt/tool/lib/python3.11/site-packages"


def metadata(name: str, version: str) -> bytes:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\n"
        "Name: not-this\nVersion: 9.9\n"
    ).encode()


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> list[bytes]:
    """An image export: a tar stream, cut in uneven chunks as the Engine streams it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    raw = buffer.getvalue()
    return [raw[i : i + 777] for i in range(0, len(raw), 777)]


def test_distributions_are_read_from_every_python_layout_and_nothing_else() -> None:
    files = {
        f"{VENV}/urllib3-1.24.1.dist-info/METADATA": metadata("urllib3", "1.24.1"),
        f"{VENV}/urllib3-1.24.1.dist-info/RECORD": b"",
        "usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO": metadata("six", "1.16.0"),
        "usr/local/lib/python3.12/site-packages/pip-24.0.dist-info/METADATA": metadata(
            "pip", "24.0"
        ),
        "root/.local/lib/python3.11/site-packages/old-1.0-py3.11.egg-info": metadata("old", "1.0"),
        # The same distribution in a second place is looked up once.
        "usr/lib/python3.11/site-packages/urllib3-1.24.1.dist-info/METADATA": metadata(
            "urllib3", "1.24.1"
        ),
        # Vendored metadata and stray files are not installed distributions.
        f"{VENV}/setuptools/_vendor/packaging-24.0.dist-info/METADATA": metadata("packaging", "24"),
        "srv/app/requests-2.0.dist-info/METADATA": metadata("requests", "2.0"),
        f"{VENV}/evil-1.dist-info/METADATA": metadata("../../admin", "1"),
    }
    links = {f"{VENV}/linked-1.0.dist-info/METADATA": "/etc/passwd"}
    found = read_distributions(tar_of(files, links))
    assert [(d.name, d.version) for d in found] == [
        ("old", "1.0"),
        ("pip", "24.0"),
        ("six", "1.16.0"),
        ("urllib3", "1.24.1"),
    ]
    assert found[-1].path.startswith("/")


def test_metadata_paths_and_headers() -> None:
    assert is_metadata_file(f"{VENV}/a-1.dist-info/METADATA")
    assert is_metadata_file("./usr/lib/python3/dist-packages/b-2.egg-info/PKG-INFO")
    assert not is_metadata_file(f"{VENV}/a-1.dist-info/RECORD")
    assert not is_metadata_file("site-packages/x/a-1.dist-info/METADATA")
    parsed = parse_metadata("Name: PyYAML\nVersion: 6.0.1\n", "/p")
    assert parsed == Installed("PyYAML", "6.0.1", "/p")
    assert parse_metadata("Name: x\n", "/p") is None  # no version
    assert parse_metadata("Name: x\nVersion: 1.0/../../y\n", "/p") is None


def payload(*entries: dict[str, object]) -> dict[str, object]:
    return {"info": {"name": "x", "version": "1"}, "vulnerabilities": list(entries)}


def test_advisories_drop_withdrawn_ones_and_aliases_of_one_flaw() -> None:
    found = advisories(
        payload(
            {"id": "PYSEC-1", "aliases": ["CVE-1", "GHSA-1"], "fixed_in": ["2.0"], "details": "a"},
            {"id": "GHSA-1", "aliases": ["CVE-1", "PYSEC-1"], "fixed_in": ["2.0"]},
            {"id": "PYSEC-2", "aliases": [], "fixed_in": [], "withdrawn": "2024-01-01"},
            {"id": "PYSEC-3", "aliases": None, "fixed_in": ["3.1", "2.9"], "summary": "b\x1b[2J"},
        )
    )
    assert [(a.id, a.fixed_in) for a in found] == [
        ("PYSEC-1", ("2.0",)),
        ("PYSEC-3", ("3.1", "2.9")),
    ]
    assert found[1].summary == "b\\x1b[2J"  # upstream text is shown, never obeyed
    with pytest.raises(ValueError, match="no `vulnerabilities` list"):
        advisories({"info": {}})
    with pytest.raises(ValueError, match="no id"):
        advisories(payload({"aliases": []}))


URLLIB3 = Advisory("PYSEC-2019-133", ("CVE-2019-11324",), ("1.24.2",))
PIP = Advisory("PYSEC-2023-228", ("CVE-2023-5752",), ("23.3",))
LOOKUPS = [
    Lookup(Installed("urllib3", "1.24.1", "/a"), (URLLIB3,)),
    Lookup(Installed("pip", "23.0.1", "/b"), (PIP,)),
    Lookup(Installed("local-tool", "1.0", "/c"), None),
    Lookup(Installed("six", "1.16.0", "/d"), ()),
]


def policy(**raw: object) -> VulnerabilitiesSection:
    return VulnerabilitiesSection.model_validate(raw)


def test_block_stops_the_run_naming_each_id_and_its_fix() -> None:
    verdict = evaluate(LOOKUPS, policy())
    assert verdict.blocked
    assert [(f.id, f.package, f.installed, f.fixed_in) for f in verdict.applying] == [
        ("PYSEC-2019-133", "urllib3", "1.24.1", ("1.24.2",)),
        ("PYSEC-2023-228", "pip", "23.0.1", ("23.3",)),
    ]
    assert verdict.no_data == ("local-tool",)
    assert "no vulnerability data for 1: local-tool" in verdict.summary
    message = block_message(verdict, "1.46.3")
    assert "PYSEC-2019-133 in urllib3 1.24.1 (fixed in: 1.24.2)" in message
    assert "policy block: not promoted" in message


def test_warn_records_without_blocking_and_ignored_ids_need_their_reason() -> None:
    warned = evaluate(LOOKUPS, policy(policy="warn"))
    assert not warned.blocked and len(warned.applying) == 2
    ignore = [
        {"id": "CVE-2023-5752", "reason": "pip is not used at run time"},  # an alias matches
        {"id": "PYSEC-2019-133", "reason": "no proxy in use"},
    ]
    ignored = evaluate(LOOKUPS, policy(ignore=ignore))
    assert not ignored.blocked and ignored.applying == ()
    assert [f.ignored for f in ignored.findings] == [
        "no proxy in use",
        "pip is not used at run time",
    ]
    assert "ignored: PYSEC-2019-133 in urllib3 (no proxy in use)" in ignored.summary
    nothing = evaluate([LOOKUPS[3]], policy())
    assert not nothing.blocked and "no known vulnerability" in nothing.summary


IGNORE = "vulnerabilities.ignore"


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ('policy = "deny"', "vulnerabilities.policy", "'block', 'warn' or 'off'"),
        ('ignore = [{id = "PYSEC-1"}]', "vulnerabilities.ignore.0.reason", "Field required"),
        ('ignore = [{id = "PYSEC-1", reason = " "}]', f"{IGNORE}.0.reason", "give the reason"),
        ('ignore = [{id = "no such id!", reason = "x"}]', f"{IGNORE}.0.id", "vulnerability id"),
        (
            'ignore = [{id = "PYSEC-1", reason = "a"}, {id = "pysec-1", reason = "b"}]',
            "vulnerabilities.ignore",
            "ignored more than once: PYSEC-1",
        ),
        ('polcy = "warn"', "vulnerabilities.polcy", "Extra inputs"),
    ],
)  # fmt: skip
def test_a_bad_policy_names_the_file_and_the_field(
    tmp_path: Path, section: str, field: str, message: str
) -> None:
    folder = tmp_path / "tool"
    folder.mkdir()
    (folder / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (folder / "test.sh").write_text("exit 0\n")
    (folder / "image.toml").write_text(
        '[source]\npypi = "tool"\n[base]\nimage = "python:3-alpine"\n'
        f'[target]\nrepository = "org/tool"\n[vulnerabilities]\n{section}\n'
    )
    with pytest.raises(DefinitionError) as caught:
        load_definition(folder)
    assert caught.value.field == field
    assert str(folder / "image.toml") in str(caught.value) and message in str(caught.value)


def test_the_default_policy_is_block_with_nothing_ignored(tmp_path: Path) -> None:
    assert policy() == VulnerabilitiesSection(policy="block", ignore=[])
    assert json.loads(policy().model_dump_json()) == {"policy": "block", "ignore": []}


def test_the_recorded_event_carries_what_a_message_needs() -> None:
    run = RunState("r1", "2.0.0", "python:3-alpine", "sha256:b", "check", "2026-12-01T00:00:00Z")
    run.digest = "sha256:d"
    event = checked(run, Scan(4, tuple(LOOKUPS)), policy())
    assert (event.run_id, event.digest, event.tool_version, event.policy) == (
        "r1", "sha256:d", "2.0.0", "block",
    )  # fmt: skip
    assert event.blocked and event.packages == 4 and event.no_data == ("local-tool",)
    assert [f.id for f in event.findings] == ["PYSEC-2019-133", "PYSEC-2023-228"]
    unreadable = Scan(4, unreadable="vulnerability data for six 1.16.0 …: HTTP 503")
    down = checked(run, unreadable, policy(policy="warn"))
    assert not down.blocked and down.findings == () and "HTTP 503" in down.unreadable
    assert down.summary.startswith("vulnerability data could not be read")
