"""Shared fixtures: paths to the real ECG samples, knowledge base files built once per session
(the curated pack; the pack with the PTB-XL label vectors embedded), and fresh copies."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from encoders.text import Embedder, EncoderSpec, label_entries, view_texts
from kb_store.store import KnowledgeBase
from knowledge.curated import import_pack
from knowledge.schema import DiagnosisKnowledge

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KED_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_VOCAB = SHARED_DATA.parent / "vocab"


def pytest_configure(config: pytest.Config) -> None:
    """Tests, and the ked processes they start, compute on one torch thread unless
    OMP_NUM_THREADS says otherwise: on a busy 2-core machine a second thread per process waits
    on the first (the two training tests of tests/test_pretrain.py at load 4.7: 180 s with two
    threads, 60 s with one)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder of real ECG samples; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared ECG samples not found at {SHARED_DATA} (set KED_SHARED_DATA to run this test)"
        )
    return SHARED_DATA


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ked.duckdb"


@pytest.fixture(scope="session")
def curated_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A knowledge base file holding the curated pack. Shared: copy it before writing."""
    path = tmp_path_factory.mktemp("curated") / "curated.duckdb"
    with KnowledgeBase(path) as kb:
        import_pack(kb)
    return path


@pytest.fixture(scope="session")
def curated_records(curated_kb: Path) -> Callable[[list[str]], list[DiagnosisKnowledge]]:
    """The current curated records of the named diagnoses, in order."""

    def records(names: list[str]) -> list[DiagnosisKnowledge]:
        with KnowledgeBase(curated_kb, read_only=True) as kb:
            found = kb.resolve_many(names)
            current = kb.current_many(d.id for d in found.values() if d is not None)
            return [current[found[n].id].record for n in names]  # type: ignore[union-attr]

    return records


@pytest.fixture(scope="session")
def embedded_kb(curated_kb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The curated knowledge base with the name and full views of the PTB-XL labels embedded by
    the default text encoder, so tests that train or score need not load it. Shared: copy it."""
    path = copy_kb(curated_kb, tmp_path_factory.mktemp("embedded"))
    with KnowledgeBase(path) as kb:
        by_view = view_texts(kb, label_entries(kb, vocab="ptbxl"), ["name", "full"])
        Embedder(kb, EncoderSpec()).embed([text for texts in by_view.values() for text in texts])
    return path


def copy_kb(curated: Path, folder: Path) -> Path:
    """A private copy of a shared knowledge base file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(curated, folder / "kb.duckdb"))


@pytest.fixture
def kb_copy(curated_kb: Path, tmp_path: Path) -> Path:
    """A fresh copy of the curated knowledge base for one test."""
    return copy_kb(curated_kb, tmp_path)
