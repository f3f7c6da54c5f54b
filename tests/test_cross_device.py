"""Inputs across devices: PTB-XL record 6005 as raw millivolts at 500 Hz (the CinC 2021 copy,
HR06005) and as the shared sample's filtered, z-scored 100 Hz array land on the same input; a
record-wide scale keeps what voltage criteria compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.ecg import ECGRecord, Preprocessing, open_source
from encoders.ecg.rhythm import measure_rhythm
from knowledge.leads import STANDARD_LEADS


@pytest.mark.shared_data
def test_raw_500hz_millivolts_and_the_100hz_array_give_the_same_input(shared_data: Path) -> None:
    raw = next(
        r
        for r in open_source(f"cinc2021:{shared_data / 'cinc2021'}").iter_records()
        if r.record_id == "HR06005"
    )
    array = next(
        r
        for r in open_source(f"ptbxl-array:{shared_data / 'ptbxl_sample'}").iter_records()
        if r.record_id == "6005"
    )
    assert (raw.fs, raw.units) == (500.0, "mV") and (array.fs, array.units) == (100.0, "z-score")

    pipeline = Preprocessing()
    a, b = pipeline.apply(raw).x, pipeline.apply(array).x

    assert a.shape == b.shape == (12, 1000)
    correlations = [np.corrcoef(a[lead], b[lead])[0, 1] for lead in range(12)]
    assert min(correlations) > 0.95, correlations
    assert np.abs(a - b).mean() < 0.2
    rate_a, rate_b = measure_rhythm(a, 100.0).rate_bpm, measure_rhythm(b, 100.0).rate_bpm
    assert abs(rate_a - rate_b) < 2


def test_record_normalisation_keeps_the_leads_relative_amplitudes() -> None:
    t = np.linspace(0, 10, 5000, endpoint=False)
    beats = np.sin(2 * np.pi * 1.2 * t) ** 21  # a spiky 72 bpm waveform
    gains = np.linspace(0.2, 2.4, 12)  # V-leads taller than limb leads, as in LVH
    signal = gains[:, None] * beats[None, :]
    record = ECGRecord("r", signal, 500.0, STANDARD_LEADS, "mV", (), None, "synthetic", "x", {})

    per_lead = Preprocessing().apply(record).x
    whole = Preprocessing(normalize="record").apply(record).x

    assert np.allclose(per_lead.std(axis=-1), 1.0, atol=1e-3)  # amplitudes erased
    ratio = whole.std(axis=-1) / whole.std(axis=-1)[0]
    assert np.allclose(ratio, gains / gains[0], rtol=1e-3)  # amplitudes kept, one scale
    assert np.isclose(np.median(whole.std(axis=-1)), 1.0, atol=1e-3)
