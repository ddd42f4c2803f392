"""The OCI labels a build writes: every one with a value, `created` in RFC 3339 UTC."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.definitions import load_definition
from shared.model.aggregate import RunState
from shared.stages.build import RUN_ID_LABEL, oci_labels

pytestmark = pytest.mark.timeout(10)
ROOT = Path(__file__).resolve().parents[2]
RUN = RunState("r1", "1.46.3", "python:3-alpine", "sha256:" + "a" * 64, "release", "now")


def definition(tmp_path: Path, source: str | None) -> Path:
    folder = tmp_path / "awscli"
    shutil.copytree(ROOT / "images" / "awscli", folder)
    toml = (folder / "image.toml").read_text()
    line = "" if source is None else f'source = "{source}"'
    (folder / "image.toml").write_text(re.sub(r"(?m)^source = .*$", line, toml))
    return folder


def test_labels_say_when_and_from_what_the_image_was_built(tmp_path: Path) -> None:
    built = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)
    labels = oci_labels(load_definition(definition(tmp_path, "https://x.test/awscli")), RUN, built)
    assert labels["org.opencontainers.image.created"] == "2026-12-01T03:04:05Z"
    assert labels["org.opencontainers.image.source"] == "https://x.test/awscli"
    assert labels["org.opencontainers.image.version"] == "1.46.3"
    assert labels[RUN_ID_LABEL] == "r1"
    now = oci_labels(load_definition(definition(tmp_path / "now", "https://x.test/a")), RUN)
    created = datetime.fromisoformat(now["org.opencontainers.image.created"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def test_a_label_without_a_value_is_left_out(tmp_path: Path) -> None:
    labels = oci_labels(load_definition(definition(tmp_path, None)), RUN)
    assert "org.opencontainers.image.source" not in labels
    assert all(value for value in labels.values()), labels
