"""The README's main job, ``ked demo``, end to end on the shipped sample (short settings)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_cli_knowledge import ked


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "ked-demo"
    env = {"KED_CACHE": str(out.parent / "cache")}
    result = ked("demo", "--out", str(out), "--epochs", "2", "--resamples", "200", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_demo_runs_every_stage_and_writes_the_report(demo_run: tuple[Path, str]) -> None:
    out, stdout = demo_run
    for stage in (
        "1. knowledge base",
        "2. label vectors",
        "3. pretraining",
        "4. zero-shot",
        "5. explanation",
    ):
        assert stage in stdout
    assert "214 records added" in stdout
    rows = [line.split() for line in stdout.splitlines()]
    for condition in (
        ["knowledge", "(full)"],
        ["knowledge", "(full)", "+", "measured", "criteria"],
    ):
        assert [*condition, "all", "labels"] in [row[: len(condition) + 2] for row in rows]
    assert ["name", "all", "labels"] in [row[:3] for row in rows]
    assert "held-out CLBBB: AUROC" in stdout and "held-out AFIB: AUROC" in stdout
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["conditions"]) == {
        "knowledge (full)",
        "knowledge (full) + measured criteria",
        "name",
    }
    unseen = report["groups"]["unseen in pretraining"]["labels"]
    assert {"CLBBB", "AFIB"} <= set(unseen)
    for name in ("report.md", "roc.png", "auroc.png"):
        assert (out / "report" / name).stat().st_size > 1000
    assert list((out / "report").glob("explain-*-CLBBB.png"))


def test_demo_rerun_reuses_knowledge_and_vectors(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    result = ked(
        "--db",
        str(out / "ked.duckdb"),
        "embed",
        "--vocab",
        "ptbxl",
        "--view",
        "full",
        "--view",
        "name",
    )
    assert result.returncode == 0, result.stderr
    assert "0 embedded" in result.stdout and "model loaded: no" in result.stdout


def test_explain_command_on_the_demo_run(demo_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = demo_run
    result = ked(
        "--db",
        str(out / "ked.duckdb"),
        "explain",
        "--checkpoint",
        str(out / "run"),
        "--data",
        "sample",
        "--record",
        "195",
        "--label",
        "right bundle branch block",
        "--out",
        str(tmp_path),
        env={"KED_CACHE": str(out.parent / "cache")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Most important leads" in result.stdout and "rsR'" in result.stdout
    assert "Measured criteria" in result.stdout
    assert "QRS duration: knowledge >= 120 ms; measured " in result.stdout
    (explanation,) = tmp_path.glob("*.json")
    saved = json.loads(explanation.read_text())
    assert saved["label"] == "right bundle branch block"
    assert saved["measured_criteria"][0].startswith("QRS duration: knowledge >= 120 ms")
    assert os.path.getsize(next(tmp_path.glob("*.png"))) > 20_000
