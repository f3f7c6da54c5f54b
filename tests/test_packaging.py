"""The wheel ships every data file ked reads at run time (``.ci/run`` also installs the wheel)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.conftest import REPO

CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGE_DATA: dict[str, list[str]] = CONFIG["tool"]["setuptools"]["package-data"]
TOP_PACKAGES = sorted(
    pattern.rstrip("*") for pattern in CONFIG["tool"]["setuptools"]["packages"]["find"]["include"]
)


def _data_files(package: str) -> set[Path]:
    root = REPO / package
    return {
        path
        for path in root.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }


def _declared(package: str) -> set[Path]:
    root = REPO / package
    return {path for pattern in PACKAGE_DATA.get(package, []) for path in root.glob(pattern)}


def test_every_data_file_is_declared_as_package_data() -> None:
    for package in TOP_PACKAGES:
        undeclared = _data_files(package) - _declared(package)
        assert not undeclared, f"not in [tool.setuptools.package-data]: {sorted(undeclared)}"


def test_every_package_data_pattern_matches_a_file() -> None:
    for package, patterns in PACKAGE_DATA.items():
        for pattern in patterns:
            assert any(p.is_file() for p in (REPO / package).glob(pattern)), (
                f"package-data pattern {package}/{pattern} matches no file"
            )


def test_build_backend_understands_spdx_licence_fields() -> None:
    assert isinstance(CONFIG["project"]["license"], str)  # PEP 639: setuptools >= 77
    assert "setuptools>=77" in CONFIG["build-system"]["requires"]


def _imported_modules(package: str) -> set[str]:
    names: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_a_declared_dependency() -> None:
    declared = {
        _normalized(re.match(r"[A-Za-z0-9._-]+", requirement)[0])  # type: ignore[index]
        for requirement in CONFIG["project"]["dependencies"]
    }
    third_party = {
        name
        for package in TOP_PACKAGES
        for name in _imported_modules(package)
        if name not in sys.stdlib_module_names and name not in TOP_PACKAGES
    }
    distributions = packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in third_party
        if not {_normalized(d) for d in distributions.get(module, [module])} & declared
    }
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"
