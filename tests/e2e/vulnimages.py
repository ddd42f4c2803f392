"""Quick tool images for the vulnerability gate's end-to-end tests: a real venv on the session's
Debian base holding one installed distribution, `vulntool` at the run's tool version, written as
pip writes it (`<site-packages>/vulntool-<version>.dist-info/METADATA`)."""

from __future__ import annotations

from pathlib import Path

from shared.adapters.containeroutput import STEP_FUNCTION

# The distribution each of these images installs, at the release the run builds.
DISTRIBUTION = "vulntool"
DOCKERFILE = """ARG BASE
FROM ${BASE}
ARG VERSION
RUN python3 -m venv --without-pip /opt/tool \\
 && site="$(/opt/tool/bin/python3 -c 'import sysconfig as s; print(s.get_paths()["purelib"])')" \\
 && mkdir "$site/vulntool-$VERSION.dist-info" \\
 && printf 'Metadata-Version: 2.1\\nName: vulntool\\nVersion: %s\\n\\n' "$VERSION" \\
    > "$site/vulntool-$VERSION.dist-info/METADATA"
"""
TEST = (
    "#!/bin/sh\n"
    + STEP_FUNCTION
    + """step python /opt/tool/bin/python3 --version || exit 1
"""
)
# name → its image.toml [vulnerabilities] section
POLICIES = {
    "vuln-block": "",  # the default: block
    "vuln-warn": 'policy = "warn"\n',
    "vuln-ignore": (
        'ignore = [{ id = "CVE-2099-0001", reason = "the flawed parser is never called here" }]\n'
    ),
    "vuln-down": 'policy = "block"\n',
}


def define(images: Path, name: str, index: str, base: str, repository: str) -> Path:
    folder = images / name
    folder.mkdir(parents=True)
    (folder / "image.toml").write_text(
        f'[source]\npypi = "{name}"\nindex = "{index}"\n\n[base]\nimage = "{base}"\n\n'
        f'[target]\nrepository = "{repository}"\n\n[vulnerabilities]\n{POLICIES[name]}'
    )
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "test.sh").write_text(TEST)
    return folder
