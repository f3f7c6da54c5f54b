"""Rate, regularity, premature beats, QRS duration, PR interval, QRS axis, P-wave strength,
T-wave polarity, ST deviation, Q waves and R' waves measured from real recordings, and checked
against knowledge records."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoders.ecg import open_source
from encoders.ecg.intervals import terminal_r
from encoders.ecg.manifest import Manifest
from encoders.ecg.rhythm import RhythmMeasurement, measure_rhythm, steady_rr_range
from encoders.inference.criteria import (
    CRITERIA_WEIGHT,
    criteria_log_prior,
    describe_criteria,
)
from kb_store.store import KnowledgeBase
from knowledge.leads import STANDARD_LEADS
from knowledge.schema import DiagnosisKnowledge
from tests.support.measurements import sinus_beat

CuratedRecords = Callable[[list[str]], list[DiagnosisKnowledge]]


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
    assert share("SCP:AFIB", lambda m: m.rr_range_ms >= 120) >= 0.9
    assert share("SCP:SR", lambda m: m.rr_range_ms < 120) >= 0.7


def test_the_steady_rr_range_leaves_premature_beats_and_their_pauses_out() -> None:
    sinus = np.array([0.80, 0.82, 0.81, 0.80, 0.83, 0.81, 0.80])
    ectopic = np.array([0.80, 0.82, 0.50, 1.12, 0.81, 0.80, 0.83])  # early beat, then a pause
    swinging = np.array([0.70, 0.78, 0.88, 0.95, 0.86, 0.76, 0.70])  # breathing, no jump
    assert steady_rr_range(sinus) == pytest.approx(0.03)
    assert np.ptp(ectopic) > 0.6 and steady_rr_range(ectopic) == pytest.approx(0.03)
    assert steady_rr_range(swinging) == pytest.approx(0.25)
    assert math.isnan(steady_rr_range(np.array([0.8, 0.5, 1.1])))  # nothing steady is left


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
    fast = RhythmMeasurement(rate_bpm=120.0, rr_irregularity=0.02, beats=20)
    slow = RhythmMeasurement(rate_bpm=45.0, rr_irregularity=0.02, beats=8)
    irregular = RhythmMeasurement(rate_bpm=80.0, rr_irregularity=0.25, beats=12)
    unknown = RhythmMeasurement(beats=1)

    prior = (
        criteria_log_prior(records, [fast, slow, irregular, unknown]) / CRITERIA_WEIGHT
    )  # log-compatibility

    tachy, brady, afib, lvh = prior.T
    assert tachy[0] > -0.2 and tachy[1] < -10  # a fast rate fits, a slow one does not
    assert brady[1] > -0.2 and brady[0] < -10
    assert brady[2] < -5  # sinus bradycardia is regular (and slow)
    assert afib[2] > -0.2 and afib[0] < -2  # atrial fibrillation is irregularly irregular
    assert (lvh == 0).all()  # no rhythm criteria: left as the model scores it
    assert (prior[3] == 0).all()  # nothing measured: nothing changed
    assert (prior <= 0).all()


@pytest.fixture(scope="module")
def sample_measures() -> dict[str, list[RhythmMeasurement]]:
    """Measurements of the shipped PTB-XL records, by label, for the interval criteria."""
    wanted = ("SCP:NORM", "SCP:CLBBB", "SCP:CRBBB", "SCP:LPR", "AV block", "SCP:PAC", "SCP:PVC")
    wanted += ("left fascicular block",)
    out: dict[str, list[RhythmMeasurement]] = {}
    for record in open_source("sample").iter_records():
        measured = None
        for label in wanted:
            if label in record.labels:
                measured = measured or measure_rhythm(record.signal, record.fs)
                out.setdefault(label, []).append(measured)
    return out


def _median(found: list[RhythmMeasurement], field: str) -> float:
    return float(np.nanmedian([getattr(m, field) for m in found]))


def test_qrs_pr_and_premature_beats_of_real_recordings(
    sample_measures: dict[str, list[RhythmMeasurement]],
) -> None:
    norm = sample_measures["SCP:NORM"]
    assert 85 < _median(norm, "qrs_ms") < 110  # the adult normal QRS, ~95 ms
    assert 130 < _median(norm, "pr_ms") < 180  # the adult normal PR, ~150 ms
    for bbb in ("SCP:CLBBB", "SCP:CRBBB"):  # bundle branch blocks: QRS >= 120 ms
        assert _median(sample_measures[bbb], "qrs_ms") > 125
        assert sum(m.qrs_ms >= 120 for m in sample_measures[bbb]) >= 0.8 * len(sample_measures[bbb])
    assert sum(m.qrs_ms < 120 for m in norm) >= 0.9 * len(norm)
    assert _median(sample_measures["SCP:LPR"], "pr_ms") > 200  # prolonged PR
    assert _median(sample_measures["AV block"], "pr_ms") > 195
    assert np.nanmean([m.pr_ms > 200 for m in norm]) < 0.1
    for premature in ("SCP:PAC", "SCP:PVC"):
        assert np.mean([m.premature_beats >= 1 for m in sample_measures[premature]]) >= 0.7
    assert np.mean([m.premature_beats >= 1 for m in norm]) < 0.1


def test_qrs_axis_of_real_recordings(sample_measures: dict[str, list[RhythmMeasurement]]) -> None:
    norm, fascicular = sample_measures["SCP:NORM"], sample_measures["left fascicular block"]
    assert 0 < _median(norm, "qrs_axis_deg") < 90  # the adult normal axis, about +45 degrees
    assert np.mean([m.qrs_axis_deg <= -30 for m in norm]) < 0.1
    # the pooled PTB-XL class is mostly left anterior fascicular block: -45 degrees or beyond
    assert _median(fascicular, "qrs_axis_deg") <= -45
    assert np.mean([m.qrs_axis_deg <= -30 for m in fascicular]) > 0.7
    assert np.mean([math.isnan(m.qrs_axis_deg) for m in norm]) < 0.05


def test_a_masked_limb_lead_measures_no_axis_and_changes_no_logit(
    curated_records: CuratedRecords,
) -> None:
    record = next(r for r in open_source("sample").iter_records() if "SCP:NORM" in r.labels)
    masked = np.array(record.signal, dtype=np.float64)
    masked[4] = 0.0  # aVL absent
    whole, without = measure_rhythm(record.signal, record.fs), measure_rhythm(masked, record.fs)
    assert not math.isnan(whole.qrs_axis_deg) and math.isnan(without.qrs_axis_deg)
    assert not math.isnan(without.qrs_ms)  # the other leads still give the QRS duration
    records = curated_records(["left axis deviation"])
    assert criteria_log_prior(records, [without]).tolist() == [[0.0]]


def test_measures_separate_their_labels_on_the_ptbxl_train_split(shared_data: Path) -> None:
    train, signals = _ptbxl_train(shared_data)
    groups = {
        "NORM": train.index[train["sub_class:NORM"] == 1][:300],
        "BBB": train.index[(train["sub_class:CLBBB"] == 1) | (train["sub_class:CRBBB"] == 1)],
        "LPR": train.index[train["form:LPR"] == 1],
        "premature": train.index[(train["form:PAC"] == 1) | (train["form:PVC"] == 1)],
        "SARRH": train.index[train["rhythm:SARRH"] == 1],
        "fascicular": train.index[train["sub_class:LAFB/LPFB"] == 1],
        "LNGQT": train.index[train["form:LNGQT"] == 1],
        "IMI": train.index[train["sub_class:IMI"] == 1],
        "RBBB": train.index[(train["sub_class:IRBBB"] == 1) | (train["sub_class:CRBBB"] == 1)],
    }
    measured = {
        name: [measure_rhythm(np.asarray(signals[i], dtype=np.float64), 100.0) for i in rows]
        for name, rows in groups.items()
    }

    def auroc(group: str, field: str) -> float:
        pos = np.array([getattr(m, field) for m in measured[group]])
        neg = np.array([getattr(m, field) for m in measured["NORM"]])
        pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
        wins = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
        return float(wins)

    assert auroc("BBB", "qrs_ms") > 0.95
    assert auroc("LPR", "pr_ms") > 0.9
    assert auroc("premature", "premature_beats") > 0.9
    # the RR range widens with premature beats and with sinus arrhythmia's gradual swings
    assert auroc("premature", "rr_range_ms") > 0.9 and auroc("SARRH", "rr_range_ms") > 0.85
    assert auroc("SARRH", "premature_beats") < auroc("SARRH", "rr_range_ms")
    # left fascicular blocks (mostly anterior) lie left of -30 degrees, normal ECGs do not
    assert 1 - auroc("fascicular", "qrs_axis_deg") > 0.85

    def left_share(group: str) -> float:
        return float(np.mean([m.qrs_axis_deg <= -30 for m in measured[group]]))

    assert left_share("fascicular") > 0.8 > 0.1 > left_share("NORM")
    # a long QT: Bazett's QTc of normal ECGs near the adult norm (~400 ms), long QTs above 440
    assert auroc("LNGQT", "qtc_ms") > 0.9
    norm_qtc = [m.qtc_ms for m in measured["NORM"]]
    assert 380 < np.nanmedian(norm_qtc) < 430 and np.mean(np.isnan(norm_qtc)) < 0.05
    assert np.nanmedian([m.qtc_ms for m in measured["LNGQT"]]) > 440
    inferior = [STANDARD_LEADS.index(lead) for lead in ("II", "III", "aVF")]

    def q_share(group: str) -> np.ndarray:  # pathological Q waves in II, III and aVF
        return np.array([np.nanmean(np.array(m.q_wave)[inferior]) for m in measured[group]])

    assert q_share("IMI").mean() > 0.45 > 0.15 > q_share("NORM").mean()
    assert (q_share("IMI")[:, None] > q_share("NORM")[None, :]).mean() > 0.6

    def r_prime_v1(group: str) -> float:  # right bundle branch block's rsR' in V1
        return float(
            np.nanmean([m.per_lead("r_prime")[STANDARD_LEADS.index("V1")] for m in measured[group]])
        )

    assert r_prime_v1("RBBB") > 0.75 > 0.1 > r_prime_v1("NORM")


def test_knowledge_intervals_become_a_log_prior(curated_records: CuratedRecords) -> None:
    names = [
        "right bundle branch block",  # QRS >= 120
        "normal ECG",  # QRS <= 110 and PR 120-200: the normal ranges, not checked
        "first degree AV block",  # PR >= 200
        "premature ventricular contraction",  # irregular; its QRS >= 120 is the ectopic beat's
        "sinus rhythm",  # PR 120-200, not checked
        "left anterior fascicular block",  # QRS < 120 when isolated; with a RBBB it is wide
        "incomplete right bundle branch block",  # QRS 110-119: only the lower bound checked
        "sinus arrhythmia",  # irregular, P-P intervals 120 ms or more apart
    ]
    rbbb, normal, avb, pvc, sinus, lafb, irbbb, sarrh = range(len(names))
    records = curated_records(names)
    nan = math.nan
    steady = {"rr_range_ms": 40.0, "steady_rr_range_ms": 40.0}
    narrow = sinus_beat(**steady)
    wide_long_pr = sinus_beat(qrs_ms=150.0, pr_ms=260.0, **steady)
    ectopic = sinus_beat(premature_beats=2.0, rr_range_ms=420.0, steady_rr_range_ms=40.0)
    unknown = sinus_beat(premature_beats=nan, qrs_ms=nan, pr_ms=nan)
    swinging = sinus_beat(rr_irregularity=0.04, rr_range_ms=250.0, steady_rr_range_ms=250.0)

    prior = (
        criteria_log_prior(records, [narrow, wide_long_pr, ectopic, unknown, swinging])
        / CRITERIA_WEIGHT
    )  # log-compatibility

    assert prior[0, rbbb] < -2 and prior[1, rbbb] > -0.2  # a narrow QRS is no bundle branch block
    assert prior[1, normal] == prior[0, normal] and prior[1, lafb] == prior[0, lafb]
    assert prior[0, irbbb] < -1.5 and prior[1, irbbb] > -0.2
    assert prior[0, avb] < -2 and prior[1, avb] > -0.1  # PR 160 is no first-degree AV block
    assert prior[0, pvc] < -2 and prior[2, pvc] > -0.1  # premature beats, with a narrow median QRS
    assert prior[1, sinus] == prior[0, sinus]  # a long PR does not count against sinus rhythm
    assert prior[4, sarrh] > -0.1 > -2 > prior[0, sarrh]  # gradual swings, no premature beat
    assert prior[2, sarrh] < -2  # premature beats alone are no sinus arrhythmia
    # sinus rhythm goes on around premature beats, but its P-P intervals stay within 160 ms
    assert prior[2, sinus] == prior[0, sinus] > -1 > -2 > prior[4, sinus]
    # nothing measured: the QRS, PR and RR-range criteria leave the logit as it was
    assert prior[3, rbbb] == 0 and prior[3, pvc] == 0 and prior[3, avb] > -0.1
    assert (prior <= 0).all()


def test_knowledge_q_waves_become_a_log_prior(curated_records: CuratedRecords) -> None:
    names = ["inferior myocardial infarction", "abnormal Q waves", "sinus rhythm"]
    imi, qwave, sinus = range(len(names))
    records = curated_records(names)
    inferior = {STANDARD_LEADS.index(lead) for lead in ("II", "III", "aVF")}

    def q(leads: set[int]) -> RhythmMeasurement:
        waves = tuple(1.0 if i in leads else 0.0 for i in range(12))
        return sinus_beat(q_wave=waves)

    measured = [q(inferior), q(set()), q({STANDARD_LEADS.index("III")}), q(set(range(12)))]
    prior = criteria_log_prior(records, measured) / CRITERIA_WEIGHT  # log-compatibility
    assert prior[0, imi] == 0.0  # Q waves in all three inferior leads: the finding costs nothing
    assert prior[1, imi] == pytest.approx(-1.5)  # in none: log sigmoid(-1.5) - log sigmoid(1.5)
    assert prior[1, imi] < prior[2, imi] < prior[0, imi]  # one of three lies in between
    assert prior[3, qwave] > -0.1 and prior[1, qwave] < -3
    assert (prior[:, sinus] == prior[0, sinus]).all()  # sinus rhythm states no Q waves
    unmeasured = sinus_beat()
    assert criteria_log_prior(records[:1], [unmeasured]).tolist() == [[0.0]]


def test_a_terminal_r_prime_is_found_after_the_s_wave() -> None:
    t = np.arange(14, dtype=np.float64)
    r_s = 0.3 * np.exp(-(((t - 3) / 1.2) ** 2)) - np.exp(-(((t - 7) / 1.5) ** 2))  # rS
    rsr = r_s + 0.6 * np.exp(-(((t - 11) / 1.5) ** 2))  # rSR': a broad terminal R'
    monophasic = np.exp(-(((t - 7) / 2.5) ** 2))  # a broad R: it rises after its lowest point
    leads = np.stack([r_s, rsr, monophasic, np.zeros_like(t), np.full_like(t, np.nan)])
    assert terminal_r(leads, 0.0, 13.0)[:3] == (0.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in terminal_r(leads, 0.0, 13.0)[3:])  # flat and absent


def test_knowledge_r_prime_becomes_a_log_prior(curated_records: CuratedRecords) -> None:
    names = ["incomplete right bundle branch block", "left bundle branch block"]
    irbbb, lbbb = range(len(names))
    records = curated_records(names)

    def r_prime(leads: tuple[str, ...]) -> RhythmMeasurement:
        waves = tuple(1.0 if lead in leads else 0.0 for lead in STANDARD_LEADS)
        return sinus_beat(qrs_ms=115.0, r_prime=waves)

    measured = [r_prime(("V1", "V2")), r_prime(("V1",)), r_prime(())]
    prior = criteria_log_prior(records, measured) / CRITERIA_WEIGHT
    assert prior[0, irbbb] > prior[1, irbbb] > prior[2, irbbb]
    assert prior[1, irbbb] - prior[2, irbbb] > 0.5  # V1 or V2 suffices
    assert (prior[:, lbbb] == prior[0, lbbb]).all()  # left bundle branch block states none
    lines = describe_criteria(records[irbbb], measured[2])
    assert any(
        line.startswith("R' waves: knowledge R' in V1, V2; measured R' in 0%") for line in lines
    )
    (shown,) = [x for x in describe_criteria(records[irbbb], measured[0]) if x.startswith("R'")]
    assert shown.endswith("measured R' in 100% of the listed leads measured; +0.00 on the logit")


def test_knowledge_qtc_becomes_a_log_prior(curated_records: CuratedRecords) -> None:
    names = ["prolonged QT interval", "short QT interval", "normal ECG"]
    long_qt, short_qt, normal = range(len(names))
    records = curated_records(names)

    def qtc(ms: float) -> RhythmMeasurement:
        return sinus_beat(qtc_ms=ms)

    at = {ms: i for i, ms in enumerate((400.0, 490.0, 320.0, math.nan))}
    prior = (
        criteria_log_prior(records, [qtc(ms) for ms in at]) / CRITERIA_WEIGHT
    )  # log-compatibility

    assert prior[at[490], long_qt] > -0.3 and prior[at[400], long_qt] < -1.5
    assert prior[at[320], short_qt] > -0.3 and prior[at[400], short_qt] < -0.5
    # a normal record's "QTc <= 460" is the normal range: not checked, like a normal PR
    assert prior[at[490], normal] == prior[at[400], normal]
    assert prior[at[math.nan], long_qt] == 0 and prior[at[math.nan], short_qt] == 0
    (line,) = [x for x in describe_criteria(records[long_qt], qtc(400.0)) if x.startswith("QTc")]
    assert line.startswith("QTc: knowledge >= 450 ms; measured 400 ms;")


def test_described_criteria_are_the_checks_that_make_the_log_prior(
    curated_records: CuratedRecords,
) -> None:
    afib, lad = curated_records(["atrial fibrillation", "left axis deviation"])
    sinus_left = sinus_beat(qrs_axis_deg=-60.0, p_snr=12.0)
    lines = describe_criteria(afib, sinus_left)
    assert [line.split(":")[0] for line in lines] == ["regularity", "P waves"]
    assert "knowledge irregularly irregular; measured successive-RR variation 0.02;" in lines[0]
    total = sum(float(line.rsplit("; ", 1)[1].split()[0]) for line in lines)
    assert total == pytest.approx(criteria_log_prior([afib], [sinus_left])[0, 0], abs=0.01)
    (axis,) = describe_criteria(lad, sinus_left)
    stated = "QRS axis: knowledge -90 degrees to -30 degrees; measured"
    assert axis == f"{stated} -60 degrees; -0.81 on the logit"  # twice -0.40
    unknown = RhythmMeasurement(beats=0)
    assert describe_criteria(lad, unknown) == [f"{stated} not measurable here; +0.00 on the logit"]


def test_knowledge_axis_becomes_a_log_prior(curated_records: CuratedRecords) -> None:
    names = ["left axis deviation", "right axis deviation", "normal ECG", "LVH"]
    lad, rad, normal, lvh = range(len(names))
    records = curated_records(names)

    def axis(degrees: float) -> RhythmMeasurement:
        return sinus_beat(qrs_axis_deg=degrees)

    at = {deg: i for i, deg in enumerate((60.0, -60.0, 135.0, -165.0, math.nan))}
    prior = (
        criteria_log_prior(records, [axis(deg) for deg in at]) / CRITERIA_WEIGHT
    )  # log-compatibility

    assert prior[at[60], lad] < -4 and prior[at[-60], lad] > -0.5  # +60 is no left axis deviation
    assert prior[at[135], rad] > -0.5 and prior[at[60], rad] < -1.5
    # on the circle -165 lies 15 degrees past +180: close to right axis deviation, far from left
    assert -2 < prior[at[-165], rad] < prior[at[135], rad] and prior[at[-165], lad] < -3
    assert prior[at[-60], normal] < prior[at[60], normal] - 1
    assert (prior[:, lvh] == prior[at[math.nan], lvh]).all()  # LVH states no axis range
    assert prior[at[math.nan], lad] == 0 and prior[at[math.nan], rad] == 0
    assert (prior <= 0).all()


def test_p_wave_strength_of_real_rhythms(
    sample_rhythms: dict[str, list[RhythmMeasurement]],
) -> None:
    def clear(label: str) -> float:
        return float(np.mean([m.p_snr >= 3 for m in sample_rhythms[label]]))

    # atrial fibrillation leaves no P wave on the median beat, sinus rhythm a clear one
    assert clear("SCP:AFIB") < 0.4 < 0.9 < clear("SCP:SR")
    assert (
        _median(sample_rhythms["SCP:AFIB"], "p_snr")
        < 3
        < _median(sample_rhythms["SCP:SR"], "p_snr")
    )


def test_t_wave_and_st_of_a_real_recording_flip_with_their_lead() -> None:
    record = next(r for r in open_source("sample").iter_records() if "SCP:NORM" in r.labels)
    signal = np.array(record.signal, dtype=np.float64)
    whole = measure_rhythm(signal, record.fs)
    polarity, st = whole.t_polarity, whole.st_deviation
    assert len(polarity) == len(st) == 12
    assert polarity[3] == -1 and polarity[10] == 1  # a normal T wave: inverted in aVR, up in V5
    assert max(abs(v) for v in st) < 0.2  # a normal ST segment: near the level at QRS onset
    signal[10] = -signal[10]  # V5 negated
    flipped = measure_rhythm(signal, record.fs)
    assert flipped.t_polarity[10] == -1 and flipped.t_polarity[:10] == polarity[:10]
    assert (
        flipped.st_deviation[10] == pytest.approx(-st[10]) and flipped.st_deviation[:10] == st[:10]
    )
    signal[10] = 0.0  # V5 absent
    absent = measure_rhythm(signal, record.fs)
    assert math.isnan(absent.t_polarity[10]) and math.isnan(absent.st_deviation[10])


def test_p_waves_and_t_waves_separate_their_labels_on_the_ptbxl_train_split(
    shared_data: Path,
) -> None:
    train, signals = _ptbxl_train(shared_data)
    groups = {
        "AFIB": train.index[train["rhythm:AFIB"] == 1],
        "SR": train.index[train["rhythm:SR"] == 1][:200],
        "INVT": train.index[train["form:INVT"] == 1],
        "NORM": train.index[train["sub_class:NORM"] == 1][:200],
        "STD": train.index[train["form:STD"] == 1],
        "LOWT": train.index[train["form:LOWT"] == 1],
    }
    measured = {
        name: [measure_rhythm(np.asarray(signals[i], dtype=np.float64), 100.0) for i in rows]
        for name, rows in groups.items()
    }
    p_snr = {name: np.array([m.p_snr for m in found]) for name, found in measured.items()}
    afib, sr = p_snr["AFIB"][:, None], p_snr["SR"][None, :]
    assert (sr > afib).mean() > 0.9  # AUROC of the P wave's strength, sinus rhythm vs AF
    leads = [STANDARD_LEADS.index(lead) for lead in ("I", "II", "aVL", "aVF", "V2", "V3", "V4")]
    leads += [STANDARD_LEADS.index("V5"), STANDARD_LEADS.index("V6")]  # the INVT record's leads

    def inverted(group: str) -> np.ndarray:
        return np.array([np.mean(np.array(m.t_polarity)[leads] == -1) for m in measured[group]])

    assert inverted("INVT").mean() > 0.3 > 0.1 > inverted("NORM").mean()
    assert (inverted("INVT")[:, None] > inverted("NORM")[None, :]).mean() > 0.85

    def depressed(group: str) -> np.ndarray:  # in the ST depression record's leads (also V2-V6)
        return np.array([np.mean(np.array(m.st_deviation)[leads] < -0.05) for m in measured[group]])

    assert depressed("STD").mean() > 0.2 > 0.05 > depressed("NORM").mean()
    # ties (no lead depressed in either, most normal ECGs) counted against
    assert (depressed("STD")[:, None] > depressed("NORM")[None, :]).mean() > 0.7
    flat_leads = [STANDARD_LEADS.index(lead) for lead in ("I", "II", "aVL", "aVF", "V4", "V5")]

    def flat(group: str) -> np.ndarray:  # T under a tenth of the QRS in the LOWT record's leads
        return np.array([np.mean(np.array(m.t_size)[flat_leads] < 0.1) for m in measured[group]])

    assert flat("LOWT").mean() > 0.4 > 0.1 > flat("NORM").mean()
    assert (flat("LOWT")[:, None] > flat("NORM")[None, :]).mean() > 0.7


def test_knowledge_p_and_t_waves_become_a_log_prior(curated_records: CuratedRecords) -> None:
    names = ["atrial fibrillation", "atrial flutter", "sinus rhythm", "right bundle branch block"]
    names += ["normal ECG", "T wave inversion", "first degree AV block", "ST depression"]
    names += ["low amplitude T waves"]
    afib, flutter, sinus, rbbb, normal, invt, avb, std, lowt = range(len(names))
    records = curated_records(names)
    upright = (1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    inverted = (1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0)

    level, low = (0.0,) * 12, (-0.1,) * 12  # ST at the QRS-onset level, or 10% of the QRS below

    def beat(
        p_snr: float, t: tuple[float, ...], st: tuple[float, ...] = level, size: float = 0.3
    ) -> RhythmMeasurement:
        return sinus_beat(
            qrs_ms=100.0,
            qrs_axis_deg=45.0,
            p_snr=p_snr,
            t_polarity=t,
            st_deviation=st,
            t_size=(size,) * 12,
        )

    clear, none = beat(12.0, upright), beat(1.5, upright)
    unknown = RhythmMeasurement(beats=1)  # no P-wave strength, T wave or ST
    measured = [clear, none, unknown, beat(12.0, inverted), beat(12.0, upright, low)]
    measured += [beat(12.0, upright, size=0.05)]  # T waves a twentieth of the QRS
    prior = criteria_log_prior(records, measured) / CRITERIA_WEIGHT  # log-compatibility

    assert prior[0, afib] < prior[1, afib] - 5  # a clear P wave is no atrial fibrillation
    assert prior[1, sinus] < prior[0, sinus] - 1.5  # sinus rhythm has one
    assert prior[0, flutter] == prior[1, flutter]  # flutter waves may look like a P wave
    assert prior[0, rbbb] == prior[1, rbbb]  # a bundle branch block holds in AF too
    assert prior[0, avb] > prior[1, avb]  # first-degree AV block: sinus P, long PR
    assert prior[3, normal] < prior[0, normal] - 1  # normal T waves are upright
    assert prior[3, invt] > -0.5 > -2 > prior[0, invt]  # T inverted in 6 of its 9 leads
    assert prior[4, std] > -0.1 > -3 > prior[0, std]  # ST depression, in all its leads or none
    assert prior[5, lowt] > -0.1 > -3 > prior[0, lowt]  # low T waves, in all its leads or none
    assert (prior[2] == 0).all()  # nothing measured: nothing changed
    assert (prior <= 0).all()


def _ptbxl_train(shared_data: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The shared PTB-XL sample's train split: its label rows and the memory-mapped signals."""
    folder = shared_data / "ptbxl_sample"  # the fixture skips where the shared data is absent
    labels = pd.read_csv(folder / "labels.csv")
    signals = np.load(folder / "signals_100hz.npy", mmap_mode="r", allow_pickle=False)
    carved = Manifest.scan(f"ptbxl-array:{folder}").with_splits().table  # test carved out
    return labels.loc[carved["index"][carved.split == "train"].astype(int)], signals
