"""Lazy package exports (PEP 562): a package's names load with their module on first use.

A package lists its exports as imports under ``if TYPE_CHECKING:`` (what type checkers and
readers see) and sets ``__getattr__ = lazy_getattr(__name__)``, which reads that block to find
each name's module. ``ked --help`` and other light commands then import a package for one
cheap name without loading torch, scipy or pandas (seconds on 2 cores) with its siblings.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lazy_getattr(package: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``, from its ``if TYPE_CHECKING:`` imports."""
    source = Path(str(sys.modules[package].__file__)).read_text(encoding="utf-8")
    module_of = {
        alias.asname or alias.name: str(statement.module)
        for node in ast.parse(source).body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for statement in node.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_of[name]), name)

    return __getattr__
