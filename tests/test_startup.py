"""Start-up stays light: ``ked --help``, ``ked kb list`` and a fully cached ``ked embed`` import
none of the heavy libraries, which cost seconds on 2 cores (``bench/startup.py`` measures the
wall times). Each command runs in a fresh interpreter that reports what it loaded."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from encoders.text import Embedder, EncoderSpec, label_entries, view_texts
from kb_store.store import KnowledgeBase
from ked.cli import USER_ERRORS

HEAVY = (
    "torch",
    "transformers",
    "sentence_transformers",
    "pandas",
    "scipy",
    "sklearn",
    "matplotlib",
    "openai",
)

# Runs ``ked ARGS`` through its entry point, then prints the heavy modules it loaded.
PROBE = f"""
import json, sys
from ked.cli import main
sys.argv = ["ked", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def heavy_modules_loaded(*args: str, cwd: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    assert heavy_modules_loaded("--help", cwd=tmp_path) == []


def test_kb_list_imports_no_heavy_library(kb_copy: Path, tmp_path: Path) -> None:
    assert heavy_modules_loaded("--db", str(kb_copy), "kb", "list", cwd=tmp_path) == []


def test_fully_cached_embed_imports_no_heavy_library(kb_copy: Path, tmp_path: Path) -> None:
    labels = ["atrial fibrillation", "sinus bradycardia"]
    with KnowledgeBase(kb_copy) as kb:
        embedder = Embedder(kb, EncoderSpec(), device="cpu")
        texts = view_texts(kb, label_entries(kb, labels=labels), ["name"])["name"]
        vectors = np.full((len(texts), 384), 384**-0.5, dtype=np.float32)
        embedder.store(texts, vectors, 384)  # the cache as a finished job leaves it
    args = ("--db", str(kb_copy), "embed", *labels, "--view", "name", "--device", "cpu")
    assert heavy_modules_loaded(*args, cwd=tmp_path) == []


def test_user_errors_name_exception_classes() -> None:
    for module, name in USER_ERRORS:
        error = getattr(importlib.import_module(module), name)
        assert issubclass(error, Exception), (module, name)
