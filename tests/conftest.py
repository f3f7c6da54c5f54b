"""Shared fixtures: paths to the real ECG samples and a fresh knowledge base file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KED_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_VOCAB = SHARED_DATA.parent / "vocab"


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
