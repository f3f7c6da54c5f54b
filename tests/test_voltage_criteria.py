"""Wave amplitudes in millivolts measured from real recordings in mV, and the knowledge's
voltage criteria (Sokolow-Lyon, low voltage, tall P...) checked against them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from encoders.ecg import open_source, sample_data_dir
from encoders.ecg.dataset import ECGDataset
from encoders.ecg.manifest import Manifest
from encoders.ecg.preprocess import Preprocessing
from encoders.ecg.rhythm import detect_beats, measure_prepared
from encoders.inference.criteria import (
    CRITERIA_WEIGHT,
    criteria_log_prior,
    describe_criteria,
)
from knowledge.leads import STANDARD_LEADS
from knowledge.schema import DiagnosisKnowledge, VoltageCriterion
from tests.support.measurements import sinus_beat

CINC_SAMPLE = f"cinc2021:{sample_data_dir() / 'cinc2021'}"

CuratedRecords = Callable[[list[str]], list[DiagnosisKnowledge]]


def test_amplitudes_are_the_millivolts_of_real_recordings() -> None:
    pre = Preprocessing()
    records = list(open_source(CINC_SAMPLE).iter_records())
    assert records and all(r.units == "mV" for r in records)
    for record in records:
        prepared = pre.prepare(record)
        measured = measure_prepared(pre, prepared, record.units)
        assert len(measured.qrs_mv) == len(STANDARD_LEADS)
        # the median beat's QRS peak to peak is that of the beats themselves, each taken as
        # the range within 80 ms of the detected QRS in the prepared (filtered, mV) signal
        window, beats = prepared.x[:, : pre.n_samples], detect_beats(pre.window(prepared).x, pre.fs)
        per_beat = np.median([np.ptp(window[:, b - 8 : b + 9], axis=-1) for b in beats[1:-1]], 0)
        qrs = np.array(measured.qrs_mv)
        assert (qrs / per_beat > 0.8).all() and (qrs / per_beat < 1.1).all()
        assert (np.array(measured.r_mv) + np.array(measured.s_mv) >= qrs - 1e-9).all()
        # twice the voltage: twice the amplitudes, every other measure as it was
        doubled = replace(record, signal=record.signal * 2)
        again = measure_prepared(pre, pre.prepare(doubled), doubled.units)
        np.testing.assert_allclose(again.qrs_mv, 2 * qrs, rtol=1e-4)
        np.testing.assert_allclose(again.r_mv, 2 * np.array(measured.r_mv), rtol=1e-4)
        unscaled = ("r_mv", "s_mv", "qrs_mv", "p_mv")
        np.testing.assert_equal(
            asdict(replace(again, **{k: () for k in unscaled})),
            asdict(replace(measured, **{k: () for k in unscaled})),
        )
        # the same samples read as z-scores carry no millivolts: no amplitudes
        assert measure_prepared(pre, prepared, "z-score").qrs_mv == ()


def test_manifests_record_the_units_and_the_sex(tmp_path: Path) -> None:
    cinc = Manifest.scan(CINC_SAMPLE)
    assert set(cinc.table["units"]) == {"mV"}
    saved = Manifest.scan("sample").save(tmp_path / "m.parquet")
    assert set(Manifest.load(saved).table["units"]) == {"z-score"}
    assert Manifest.load(saved).table["sex"].isna().all()  # the array sample does not say
    # the headers' #Sex reaches the dataset and, through it, the measurements
    headers = {r.record_id: r.meta.get("sex") for r in open_source(CINC_SAMPLE).iter_records()}
    assert headers and set(headers.values()) <= {"male", "female"}
    data = ECGDataset(cinc, Preprocessing(), [], lambda _: None)
    assert [data.sex(i) for i in range(len(data))] == [headers[r] for r in data.record_ids]
    pre = Preprocessing()
    measured = measure_prepared(pre, data.prepared(0), data.units(0), data.sex(0))
    assert measured.sex == headers[data.record_ids[0]]


def _amplitudes(**per_lead: dict[str, float]) -> dict[str, tuple[float, ...]]:
    """Per-lead amplitude tuples (0 mV where a lead is not named) by wave field."""
    out = {}
    for field in ("r_mv", "s_mv", "qrs_mv", "p_mv"):
        given = per_lead.get(field, {})
        out[field] = tuple(given.get(lead, 0.0) for lead in STANDARD_LEADS)
    return out


def test_knowledge_voltage_becomes_a_log_prior(curated_records: CuratedRecords) -> None:
    names = ["LVH", "low QRS voltages", "right atrial abnormality", "sinus tachycardia"]
    lvh, low, rae, stach = range(len(names))
    records = curated_records(names)
    beat = sinus_beat()
    limbs = {lead: 1.2 if lead in STANDARD_LEADS[:6] else 2.5 for lead in STANDARD_LEADS}
    sokolow = replace(
        beat,
        **_amplitudes(
            s_mv={"V1": 2.0}, r_mv={"V5": 1.2, "V6": 2.1}, qrs_mv=limbs, p_mv={"II": 0.1}
        ),
    )
    tall_avl = replace(
        beat, **_amplitudes(s_mv={"V1": 0.8}, r_mv={"aVL": 1.3, "V5": 1.0}, qrs_mv=limbs)
    )
    small = replace(
        beat,
        **_amplitudes(
            s_mv={"V1": 0.5}, r_mv={"V5": 0.6}, qrs_mv={lead: 0.4 for lead in STANDARD_LEADS}
        ),
    )
    peaked_p = replace(small, p_mv=tuple(0.35 if lead == "III" else 0.1 for lead in STANDARD_LEADS))
    prior = (
        criteria_log_prior(records, [sokolow, tall_avl, small, peaked_p, beat]) / CRITERIA_WEIGHT
    )  # log-compatibility

    assert prior[0, lvh] > -0.2 and prior[2, lvh] < -5  # S V1 + R V6: 4.1 mV, 1.1 mV
    assert prior[1, lvh] > -0.2  # any one criterion suffices: R in aVL 1.3 >= 1.1 mV
    assert prior[2, low] > -0.1 and prior[0, low] < -5  # 0.4 mV in every lead is low voltage
    assert prior[3, rae] > -0.2 and prior[2, rae] < -3  # P 0.35 mV in III
    assert (prior[:, stach] == prior[4, stach]).all()  # sinus tachycardia states no voltage
    assert prior[4, lvh] == 0 and prior[4, low] == 0  # no amplitudes measured: no change
    (line,) = [x for x in describe_criteria(records[lvh], small) if x.startswith("voltage")]
    assert "Sokolow-Lyon (S in V1 + R in V5/V6) >= 3.5 mV or R in aVL" in line
    assert "measured 1.10 mV on the criterion met best" in line


def test_a_limit_stated_for_one_sex_counts_only_for_that_sex(
    curated_records: CuratedRecords,
) -> None:
    (lvh,) = curated_records(["LVH"])
    cornell = [c for c in lvh.morphology.voltage_criteria if c.name.startswith("Cornell")]  # type: ignore[union-attr]
    assert {(c.sex, c.sum_mv.min) for c in cornell} == {("male", 2.8), ("female", 2.0)}
    # Cornell R aVL + S V3 = 2.5 mV: met at the women's 2.0 mV, not at the men's 2.8 mV;
    # Sokolow-Lyon (1.8 mV) and R in aVL (0.8 mV) are not met by anyone
    beat = replace(
        sinus_beat(), **_amplitudes(r_mv={"aVL": 0.8, "V5": 1.0}, s_mv={"V1": 0.8, "V3": 1.7})
    )
    patients = [replace(beat, sex="female"), replace(beat, sex="male"), beat]
    female, male, unknown = criteria_log_prior([lvh], patients)[:, 0] / CRITERIA_WEIGHT
    assert female > -0.2 and male < -1.0
    assert unknown < male  # sex unknown: only the limits that hold for everyone are checked
    (line,) = [x for x in describe_criteria(lvh, patients[0]) if x.startswith("voltage")]
    assert "Cornell voltage, women (R in aVL + S in V3) >= 2 mV, female patients only" in line
    assert "measured 2.50 mV on the criterion met best" in line


def test_voltage_criteria_are_validated_and_left_out_when_empty(
    curated_records: CuratedRecords,
) -> None:
    term: dict[str, Any] = {"wave": "R", "leads": ["avl"]}
    ok = VoltageCriterion.model_validate(
        {"name": "R in aVL", "terms": [term], "sum_mv": {"min": 1.1}}
    )
    assert ok.terms[0].leads == ["aVL"]
    with pytest.raises(ValidationError, match="outside the physiological range"):
        VoltageCriterion.model_validate(
            {"name": "R in aVL", "terms": [term], "sum_mv": {"min": 11}}
        )
    with pytest.raises(ValidationError):
        VoltageCriterion.model_validate(
            {"name": "T in V2", "terms": [{"wave": "T", "leads": ["V2"]}], "sum_mv": {"min": 1}}
        )
    assert "sex" not in ok.model_dump(mode="json")  # absent: the record's hash is unchanged
    (rbbb,) = curated_records(["right bundle branch block"])
    dumped = rbbb.model_dump(mode="json")
    assert dumped["morphology"] and "voltage_criteria" not in dumped["morphology"]
