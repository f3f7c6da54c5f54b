"""The knowledge schema rejects impossible or self-contradictory records, naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from knowledge.schema import DiagnosisKnowledge, format_validation_errors
from tests.support.openai_server import EXAMPLE


def base() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def errors_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        DiagnosisKnowledge.model_validate(data)
    return "\n".join(format_validation_errors(info.value))


def with_changes(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(base())
    data.update(changes)
    return data


def test_worked_example_is_valid_and_leads_are_canonical() -> None:
    data = with_changes(leads=["ii", "AVF", "v1", "III"])
    record = DiagnosisKnowledge.model_validate(data)
    assert record.leads == ["II", "III", "aVF", "V1"]


def test_unknown_lead_is_rejected_with_its_name() -> None:
    message = errors_of(with_changes(leads=["II", "V7"]))
    assert "leads.1" in message and "V7" in message


def test_pr_of_2000_ms_is_rejected() -> None:
    data = base()
    data["rhythm"]["p_waves"] = {"presence": "present", "relation_to_qrs": "1:1"}
    data["rhythm"]["pr_interval_ms"] = {"min": 2000}
    message = errors_of(data)
    assert "rhythm.pr_interval_ms" in message and "2000 ms" in message


def test_an_rr_range_beyond_three_seconds_is_rejected() -> None:
    data = base()
    data["rhythm"]["rr_range_ms"] = {"min": 120}
    assert DiagnosisKnowledge.model_validate(data).rhythm.rr_range_ms.min == 120  # type: ignore[union-attr]
    data["rhythm"]["rr_range_ms"] = {"min": 120, "max": 5000}
    message = errors_of(data)
    assert "rhythm.rr_range_ms" in message and "5000 ms" in message


def test_qrs_axis_outside_the_circle_is_rejected() -> None:
    data = base()
    data["morphology"]["qrs_axis_deg"] = {"min": -90, "max": -30}
    assert DiagnosisKnowledge.model_validate(data).morphology.qrs_axis_deg.max == -30  # type: ignore[union-attr]
    data["morphology"]["qrs_axis_deg"] = {"min": 90, "max": 270}
    message = errors_of(data)
    assert "morphology.qrs_axis_deg" in message and "270 degrees" in message


def test_an_axis_alone_is_no_description_of_the_ecg() -> None:
    morphology = {"qrs_axis_deg": {"min": -90, "max": -30}}
    data = with_changes(category="other", rhythm=None, morphology=morphology)
    assert "rhythm, morphology" in errors_of(data)


def test_qrs_of_5_ms_and_seconds_for_milliseconds_are_rejected() -> None:
    data = base()
    data["morphology"]["qrs_complex"]["duration_ms"] = {"min": 5, "max": 10}
    assert "morphology.qrs_complex" in errors_of(data)
    data["morphology"]["qrs_complex"]["duration_ms"] = {"min": 0.08, "max": 0.1}
    assert "not seconds" in errors_of(data)


def test_bradycardia_with_a_minimum_of_120_bpm_is_rejected() -> None:
    data = with_changes(name="sinus bradycardia")
    data["rhythm"]["rate_bpm"] = {"min": 120, "max": 150}
    assert "rhythm.rate_bpm" in errors_of(data) and "bradycardia" in errors_of(data)


def test_tachycardia_needs_rate_of_at_least_100() -> None:
    data = with_changes(name="sinus tachycardia")
    data["rhythm"]["rate_bpm"] = {"min": 60, "max": 100}
    assert "tachycardia" in errors_of(data)


def test_territory_whose_leads_disagree_is_rejected() -> None:
    data = with_changes(territories=[{"territory": "inferior", "leads": ["II", "V2"]}])
    message = errors_of(data)
    assert "territories.0" in message and "V2" in message and "inferior" in message


def test_named_territory_must_show_in_the_leads() -> None:
    data = with_changes(
        name="inferior myocardial infarction", category="infarction", leads=["V1", "V2"]
    )
    assert "II, III, aVF" in errors_of(data)


def test_complete_bundle_branch_block_needs_a_broad_qrs() -> None:
    data = with_changes(name="left bundle branch block", category="conduction")
    data["morphology"]["qrs_complex"]["duration_ms"] = {"min": 80, "max": 110}
    assert ">= 120 ms" in errors_of(data)


def test_first_degree_block_needs_pr_over_200() -> None:
    data = with_changes(name="first degree AV block", category="conduction")
    data["rhythm"]["p_waves"] = {"presence": "present", "relation_to_qrs": "1:1"}
    data["rhythm"]["pr_interval_ms"] = {"min": 120, "max": 200}
    assert "prolonged PR" in errors_of(data)


def test_absent_p_waves_cannot_have_a_pr_interval() -> None:
    data = base()
    data["rhythm"]["pr_interval_ms"] = {"min": 120, "max": 200}
    assert "pr_interval_ms" in errors_of(data)


def test_range_min_above_max_and_extra_fields_are_rejected() -> None:
    data = base()
    data["rhythm"]["rate_bpm"] = {"min": 150, "max": 75}
    assert "min 150 is greater than max 75" in errors_of(data)
    assert "confidence" in errors_of(with_changes(confidence=0.9))


def test_record_must_describe_the_ecg() -> None:
    data = with_changes(category="other", rhythm=None, morphology=None)
    assert "rhythm, morphology" in errors_of(data)


def test_summary_is_one_paragraph() -> None:
    data = with_changes(summary="First paragraph that is long enough here.\n\nSecond paragraph.")
    assert "one paragraph" in errors_of(data)
