"""The benchmarks and the shipped packages never import the test suite: what they share with it
lives in shared/testing (the worker harness, the PyPI stand-in, the services' addresses)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "shared", "workers", "beat")


def imported_modules(source: Path) -> list[str]:
    """Every module a file imports (absolute names; relative imports as written)."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules.append(node.module)
    return modules


@pytest.mark.parametrize("package", PACKAGES)
def test_the_package_does_not_import_the_tests(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}: no Python files found"
    offending = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if module == "tests" or module.startswith("tests.")
    ]
    assert not offending, offending
