"""Real inputs for the HTML report's tests: a knowledge base with a second, edited version of
one diagnosis; the output folders of a real ``ked eval`` and ``ked explain`` run with a small
checkpoint pretrained for two steps on the packaged sample; and the site ``ked report`` writes of
them (the ``report_inputs`` fixture of tests/support/report_fixtures.py builds them once per test
process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kb_store.store import KnowledgeBase, Provenance
from tests.conftest import copy_kb
from tests.support.cli import run_ked

EDITED = "atrial fibrillation"
# Evaluated labels: common and rare ones, and two without positives in the sample's test split.
LABELS = ("NORM", "SR", "AFIB", "CLBBB", "CRBBB", "IMI", "ASMI", "LVH", "NDT", "1AVB")


@dataclass(frozen=True)
class ReportInputs:
    db: Path
    run: Path  # the checkpoint's run folder
    eval: Path  # `ked eval --out`
    explain: Path  # `ked explain --out`
    site: Path  # `ked report --out` of the above, the evaluated labels' label space


def edit_one_diagnosis(db: Path) -> None:
    """Store a second version of atrial fibrillation with a rate range, a caveat and a lead."""
    with KnowledgeBase(db) as kb:
        diagnosis = kb.resolve(EDITED)
        assert diagnosis is not None
        stored = kb.current(diagnosis.id)
        assert stored is not None and stored.record.rhythm is not None
        fields = stored.record.model_dump(mode="json")
        edited = stored.record.model_validate(
            {
                **fields,
                "rhythm": {**fields["rhythm"], "rate_bpm": {"min": 60, "max": 170}},
                "caveats": [*stored.record.caveats, "Rates above 170 bpm suggest pre-excitation"],
                "leads": [*stored.record.leads, "V2"],
            }
        )
        kb.add_knowledge(edited, Provenance(source="manual"), diagnosis_id=diagnosis.id)


def _ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run_ked(capsys, *args)
    assert code == 0, err
    return out


def build_report_inputs(
    embedded_kb: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> ReportInputs:
    """Build the inputs and their site in ``folder``."""
    db = copy_kb(embedded_kb, folder)
    edit_one_diagnosis(db)
    run, evaluation, explain = folder / "run", folder / "eval", folder / "explain"
    common = ("--db", str(db))
    _ok(capsys, *common, "pretrain", "--data", "sample", "--vocab", "ptbxl", "--view", "name",
        "--view", "full", "--epochs", "1", "--max-steps-per-epoch", "2", "--out", str(run),
        "--device", "cpu")  # fmt: skip
    labels = [arg for label in LABELS for arg in ("--labels", label)]
    _ok(capsys, *common, "eval", "--checkpoint", str(run), "--data", "sample", *labels,
        "--out", str(evaluation), "--resamples", "50")  # fmt: skip
    record = (evaluation / "predictions-name.csv").read_text().splitlines()[1].split(",")[0]
    _ok(capsys, *common, "explain", "--checkpoint", str(run), "--data", "sample", "--record",
        record, "--label", "complete left bundle branch block", "--out", str(explain))  # fmt: skip
    site = folder / "site"
    _ok(capsys, *common, "report", "--out", str(site), "--eval", str(evaluation), "--explain",
        str(explain))  # fmt: skip
    return ReportInputs(db, run, evaluation, explain, site)
