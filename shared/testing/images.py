"""Image definitions for fault tests and benchmarks: a quick tool image (build and test take
seconds) and the real awscli definition pointed at test inputs; a bare git remote that can
hold every push."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from shared.adapters.containeroutput import STEP_FUNCTION
from shared.testing.workers import ROOT

QUICK_DOCKERFILE = """ARG BASE
FROM ${BASE}
ARG VERSION
RUN echo "$VERSION" > /version
"""
# The step protocol of images/awscli/test.sh, with a pause to have something to interrupt.
QUICK_TEST = (
    "#!/bin/sh\nset -u\n"
    + STEP_FUNCTION
    + """step version cat /version || exit 1
step work sleep SLEEP || exit 1
"""
)


def _toml(project: str, index: str, base: str, repository: str) -> str:
    return (
        f'[source]\npypi = "{project}"\nindex = "{index}"\n\n[base]\nimage = "{base}"\n\n'
        f'[target]\nrepository = "{repository}"\n'
    )


def define_quick(
    images: Path, name: str, index: str, base: str, repository: str, test_sleep_s: float = 2
) -> Path:
    """A tool image whose build is one RUN and whose test sleeps `test_sleep_s`."""
    folder = images / name
    folder.mkdir(parents=True)
    (folder / "image.toml").write_text(_toml(name, index, base, repository))
    (folder / "Dockerfile").write_text(QUICK_DOCKERFILE)
    (folder / "test.sh").write_text(QUICK_TEST.replace("SLEEP", f"{test_sleep_s:g}"))
    return folder


def define_awscli(images: Path, name: str, index: str, base: str, repository: str) -> Path:
    """The real awscli definition (Dockerfile and test script), pointed at test inputs."""
    folder = images / name
    shutil.copytree(ROOT / "images" / "awscli", folder)
    toml = (folder / "image.toml").read_text()
    for key, value in (("pypi", name), ("index", index), ("image", base)):
        toml = re.sub(rf"(?m)^{key} = .*$", f'{key} = "{value}"', toml)
    toml = re.sub(r"(?m)^repository = .*$", f'repository = "{repository}"', toml)
    (folder / "image.toml").write_text(toml)
    return folder


def bare_remote(path: Path, hook_sleep_s: float = 0, markers: Path | None = None) -> Path:
    """A bare git remote; with `hook_sleep_s`, every push waits that long in pre-receive (after
    touching a file in `markers`), so a test can kill a worker in the middle of a push."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    if hook_sleep_s:
        assert markers is not None
        markers.mkdir(parents=True, exist_ok=True)
        hook = path / "hooks" / "pre-receive"
        hook.write_text(
            f'#!/bin/sh\ncat >/dev/null\ntouch "{markers}/push-$$"\nsleep {hook_sleep_s:g}\n'
        )
        hook.chmod(0o755)
    return path


def git(remote: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(remote), *args], check=True, capture_output=True, text=True
    ).stdout.strip()
