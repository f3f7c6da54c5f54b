"""Damaged files and busy databases give one line naming the file, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkpoints import untrained_checkpoint
from tests.support.cli import run_ked


def _one_error_line(err: str, *fragments: str) -> str:
    """The single ``error:`` line of ``err``, checked to hold every fragment."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def _damaged_copies(kb: Path, folder: Path) -> list[Path]:
    """Not a database; cut short; a block overwritten (its checksum no longer matches)."""
    data = kb.read_bytes()
    garbage, cut, overwritten = (folder / f"{n}.duckdb" for n in ("garbage", "cut", "hit"))
    garbage.write_bytes(b"this is not a database\n" * 500)
    cut.write_bytes(data[:20_000])
    overwritten.write_bytes(data[:4096] + b"\xab" * 4096 + data[8192:])
    return [garbage, cut, overwritten]


def test_damaged_knowledge_base_is_one_line(
    kb_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in _damaged_copies(kb_copy, tmp_path):
        for args in (["kb", "list"], ["knowledge", "import-pack"]):
            code, out, err = run_ked(capsys, "--db", str(path), *args)
            assert code == 2 and out == ""
            _one_error_line(err, f"knowledge base {path} cannot be opened as a DuckDB database")


def test_verbose_shows_the_traceback_of_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"\0" * 10_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KED_"))}
    result = subprocess.run(
        [sys.executable, "-m", "ked", "-v", "--db", str(bad), "kb", "list"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "duckdb" in result.stderr.lower()
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: knowledge base {bad}")


def test_a_reader_holding_the_file_is_named_as_a_reader(
    kb_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from kb_store.store import KnowledgeBase; "
            f"kb = KnowledgeBase({str(kb_copy)!r}, read_only=True); print('ready', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        code, _, err = run_ked(capsys, "--db", str(kb_copy), "knowledge", "import-pack")
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    line = _one_error_line(err, f"knowledge base {kb_copy} is open for reading by process")
    assert f"process {holder.pid}" in line and "writing process" not in line


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return untrained_checkpoint(tmp_path / "run" / "best.safetensors")


def test_truncated_or_damaged_checkpoint_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = checkpoint.read_bytes()
    out = tmp_path / "emb.npy"
    for damaged in (data[: len(data) // 2], data[:6], b"{" + data[1:]):
        checkpoint.write_bytes(damaged)
        code, _, err = run_ked(
            capsys, "encode", "--checkpoint", str(checkpoint), "--data", "sample", "--out", str(out)
        )
        assert code == 2 and not out.exists()
        _one_error_line(err, f"{checkpoint}: damaged or incomplete safetensors file")
    checkpoint.with_suffix(".json").write_text('{"format": "ked-checkpoint/1", "model": ')
    code, _, err = run_ked(
        capsys, "encode", "--checkpoint", str(checkpoint), "--data", "sample", "--out", str(out)
    )
    assert code == 2
    _one_error_line(err, f"{checkpoint.with_suffix('.json')}: unreadable checkpoint config")
