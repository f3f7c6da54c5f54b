"""Checking LLM knowledge against the curated pack, and diffs between knowledge versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kb_store.store import KnowledgeBase, Provenance
from knowledge.check import Severity, check_record
from knowledge.curated import load_pack
from knowledge.diff import ChangeKind, FieldChange, diff_records
from knowledge.schema import DiagnosisKnowledge
from tests.support.cli import run_ked

PACK = load_pack()


def edited(name: str, edit: Any) -> tuple[DiagnosisKnowledge, DiagnosisKnowledge]:
    """(curated record, a copy changed by ``edit(dumped record)``)."""
    curated = PACK.resolve(name)
    assert curated is not None
    data = curated.model_dump(mode="json")
    edit(data)
    return curated, DiagnosisKnowledge.model_validate(data)


def regular_slow_af(data: dict[str, Any]) -> None:
    data["rhythm"].update(
        regularity="regular",
        atrial_rate_bpm={"min": 100, "max": 200},
        p_waves={"presence": "present", "morphology": None, "relation_to_qrs": "1:1"},
    )


def anterior_injury(data: dict[str, Any]) -> None:
    data["leads"] = ["II", "III", "aVF", "V5", "V6"]
    data["territories"] = [
        {"territory": "inferolateral", "leads": ["II", "III", "aVF", "V5", "V6"]}
    ]
    data["morphology"]["st_segment"].update(direction="elevated", leads=["V1", "V2"])


def findings(record: DiagnosisKnowledge, curated: DiagnosisKnowledge) -> dict[str, Severity]:
    return {f.path: f.severity for f in check_record(record, curated)}


def test_check_flags_rhythm_contradictions_field_by_field() -> None:
    curated, record = edited("atrial fibrillation", regular_slow_af)
    assert findings(record, curated) == {
        "rhythm.atrial_rate_bpm": Severity.CONTRADICTION,
        "rhythm.regularity": Severity.CONTRADICTION,
        "rhythm.p_waves.presence": Severity.CONTRADICTION,
    }
    rate = check_record(record, curated)[0]
    assert rate.message == "100-200 bpm is outside the curated 300-600 bpm"
    assert rate.value == {"min": 100, "max": 200} and rate.curated == {"min": 300, "max": 600}
    assert check_record(curated, curated) == []


def test_check_flags_leads_territory_and_direction() -> None:
    curated, record = edited("inferior ischemia", anterior_injury)
    assert findings(record, curated) == {
        "morphology.st_segment.leads": Severity.CONTRADICTION,
        "morphology.st_segment.direction": Severity.CONTRADICTION,
        "leads": Severity.DEVIATION,  # V5, V6 beyond II, III, aVF: overlapping, not disjoint
        "territories": Severity.CONTRADICTION,
    }


def test_a_range_partly_outside_the_curated_one_is_a_deviation() -> None:
    def wider(data: dict[str, Any]) -> None:
        data["rhythm"]["atrial_rate_bpm"] = {"min": 250, "max": 600}

    curated, record = edited("atrial fibrillation", wider)
    [finding] = check_record(record, curated)
    assert finding.severity is Severity.DEVIATION
    assert "partly outside" in finding.message


def test_diff_reports_dotted_paths_and_compares_lists_as_collections() -> None:
    curated, record = edited("inferior ischemia", anterior_injury)
    changes = diff_records(curated, record)
    assert FieldChange(ChangeKind.ADDED, "leads", new="V5") in changes
    assert FieldChange(ChangeKind.ADDED, "leads", new="V6") in changes
    assert (
        FieldChange(ChangeKind.CHANGED, "morphology.st_segment.direction", "depressed", "elevated")
        in changes
    )
    inferior = curated.territories[0].model_dump(mode="json")
    assert FieldChange(ChangeKind.REMOVED, "territories[inferior]", old=inferior) in changes
    assert [c.path for c in changes if c.path.startswith("territories")] == [
        "territories[inferior]",
        "territories[inferolateral]",
    ]
    assert diff_records(curated, curated) == []


def test_diff_of_a_range_bound_and_a_reordered_list() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["rhythm"]["atrial_rate_bpm"]["min"] = 350
        data["criteria"] = list(reversed(data["criteria"]))

    curated, record = edited("atrial fibrillation", edit)
    changes = diff_records(curated, record)
    assert changes[0] == FieldChange(ChangeKind.CHANGED, "rhythm.atrial_rate_bpm.min", 300, 350)
    assert changes[0].describe() == "changed rhythm.atrial_rate_bpm.min: 300 -> 350"
    assert [c.path for c in changes] == ["rhythm.atrial_rate_bpm.min", "criteria"]
    assert changes[1].kind is ChangeKind.CHANGED  # same criteria, another order


def store_llm_version(db: Path, record: DiagnosisKnowledge) -> None:
    with KnowledgeBase(db) as kb:
        kb.add_knowledge(record, Provenance("llm", provider="test", model="m1"))


def test_cli_check_and_diff(kb_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, record = edited("atrial fibrillation", regular_slow_af)
    store_llm_version(kb_copy, record)
    db = ("--db", str(kb_copy))

    code, out, _ = run_ked(capsys, *db, "kb", "check")  # every proposed LLM version
    assert code == 0
    assert "atrial fibrillation v2 (proposed): 3 contradictions, 0 deviations" in out
    assert "contradiction: rhythm.regularity: regular where the curated" in out

    code, out, _ = run_ked(capsys, *db, "kb", "check", "AFIB", "--json")
    [checked] = json.loads(out)
    assert checked["version"] == 2 and len(checked["findings"]) == 3

    code, out, _ = run_ked(capsys, *db, "kb", "diff", "atrial fibrillation")
    assert code == 0 and out.startswith(
        "atrial fibrillation: v1 (curated, accepted) -> v2 (llm, proposed)"
    )
    assert "changed rhythm.regularity: 'irregularly irregular' -> 'regular'" in out

    code, out, _ = run_ked(capsys, *db, "kb", "diff", "AFIB", "--from", "2", "--to", "1", "--json")
    diff = json.loads(out)
    assert (diff["from"], diff["to"]) == (2, 1)
    assert {"kind": "changed", "path": "rhythm.regularity", "old": "regular",
            "new": "irregularly irregular"} in diff["changes"]  # fmt: skip

    code, _, err = run_ked(capsys, *db, "kb", "diff", "sinus rhythm")
    assert (
        code == 2 and "has only one knowledge version" in err and len(err.strip().splitlines()) == 1
    )
    code, _, err = run_ked(capsys, *db, "kb", "diff", "AFIB", "--from", "7")
    assert code == 2 and "has no version 7" in err
    code, _, err = run_ked(capsys, *db, "kb", "check", "sinus rhythm")
    assert code == 2 and "no LLM knowledge" in err
