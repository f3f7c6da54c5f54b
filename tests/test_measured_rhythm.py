"""Rate and regularity measured from real recordings, and checked against knowledge records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoders.ecg import open_source
from encoders.ecg.rhythm import RhythmMeasurement, measure_rhythm
from encoders.inference.criteria import rhythm_log_prior
from kb_store.store import KnowledgeBase


@pytest.fixture(scope="module")
def sample_rhythms() -> dict[str, list[RhythmMeasurement]]:
    """Measurements of the shipped PTB-XL records, by rhythm statement."""
    out: dict[str, list[RhythmMeasurement]] = {}
    for record in open_source("sample").iter_records():
        for label in ("SCP:STACH", "SCP:SBRAD", "SCP:AFIB", "SCP:SR"):
            if label in record.labels:
                out.setdefault(label, []).append(measure_rhythm(record.signal, record.fs))
    return out


def test_rates_and_irregularity_of_real_rhythms(
    sample_rhythms: dict[str, list[RhythmMeasurement]],
) -> None:
    def share(label: str, check) -> float:  # type: ignore[no-untyped-def]
        found = sample_rhythms[label]
        return sum(bool(check(m)) for m in found) / len(found)

    assert share("SCP:STACH", lambda m: m.rate_bpm > 95) >= 0.9
    assert share("SCP:SBRAD", lambda m: m.rate_bpm < 62) >= 0.9
    assert share("SCP:SR", lambda m: 50 < m.rate_bpm < 105) >= 0.9
    assert share("SCP:AFIB", lambda m: m.rr_irregularity > 0.08) >= 0.8
    assert share("SCP:SR", lambda m: m.rr_irregularity < 0.08) >= 0.9


def test_a_flat_or_too_short_window_measures_nothing() -> None:
    flat = measure_rhythm(np.zeros((12, 1000)), 100.0)
    assert math.isnan(flat.rate_bpm) and math.isnan(flat.rr_irregularity)
    one_beat = np.zeros((12, 1000))
    one_beat[:, 500] = 5.0
    assert math.isnan(measure_rhythm(one_beat, 100.0).rate_bpm)


def test_knowledge_rate_and_regularity_become_a_log_prior(curated_kb) -> None:  # type: ignore[no-untyped-def]
    names = ["sinus tachycardia", "sinus bradycardia", "atrial fibrillation", "LVH"]
    with KnowledgeBase(curated_kb, read_only=True) as kb:
        found = kb.resolve_many(names)
        current = kb.current_many(d.id for d in found.values() if d is not None)
        records = [current[found[n].id].record for n in names]  # type: ignore[union-attr]
    fast = RhythmMeasurement(120.0, 0.02, 20)
    slow = RhythmMeasurement(45.0, 0.02, 8)
    irregular = RhythmMeasurement(80.0, 0.25, 12)
    unknown = RhythmMeasurement(math.nan, math.nan, 1)

    prior = rhythm_log_prior(records, [fast, slow, irregular, unknown])

    tachy, brady, afib, lvh = prior.T
    assert tachy[0] > -0.2 and tachy[1] < -10  # a fast rate fits, a slow one does not
    assert brady[1] > -0.2 and brady[0] < -10
    assert brady[2] < -5  # sinus bradycardia is regular (and slow)
    assert afib[2] > -0.2 and afib[0] < -2  # atrial fibrillation is irregularly irregular
    assert (lvh == 0).all()  # no rhythm criteria: left as the model scores it
    assert (prior[3] == 0).all()  # nothing measured: nothing changed
    assert (prior <= 0).all()
