"""Measured criteria: the knowledge record's rate, regularity, PR interval, QRS duration, QRS
axis, QTc, P-wave presence, T-wave direction, ST depression, pathological Q waves, R' waves and
voltage criteria checked against the recording.

A text encoder places "rate above 100 bpm" and "rate below 60 bpm" close together, so text
vectors alone cannot tell sinus tachycardia from sinus bradycardia, nor "-30 to -90 degrees"
from "+90 to +180 degrees". The structured knowledge can: its ``rhythm.rate_bpm`` range,
``rhythm.regularity``, ``rhythm.pr_interval_ms``, ``morphology.qrs_complex.duration_ms`` and
``morphology.qrs_axis_deg`` are checked against the rate, RR irregularity and range, PR
interval, QRS duration and frontal QRS axis measured from the signal (`encoders.ecg.rhythm`),
and the log-compatibility, times ``CRITERIA_WEIGHT``, is added to the logit. A label whose
record states none of them, or a recording where one cannot be measured, is left as the model
scored it for that criterion.

The margins are physiological or set by the 100 Hz resolution, fixed in advance and never
fitted to data: rate bounds are soft over ``RATE_MARGIN_BPM``; "regular" means a successive-RR
variation under ``REGULAR_BELOW``, "irregularly irregular" one above it, soft over
``IRREGULARITY_MARGIN``; "irregular" (premature or escape beats, pauses, sinus arrhythmia)
asks for RR intervals whose longest and shortest differ by ``IRREGULAR_RANGE_MS``, soft over
``RR_RANGE_MARGIN_MS``. ``rhythm.rr_range_ms`` bounds (sinus rhythm's P-P intervals within 160
ms, sinus arrhythmia's 120 ms or more apart) are checked against the RR range of the underlying
rhythm, premature beats and their pauses left out, soft over the same margin. PR and QRS
bounds are soft over ``PR_MARGIN_MS`` and ``QRS_MARGIN_MS``; only PR bounds beyond the normal
range ``NORMAL_PR_MS`` (a long or a short PR) are checked, only QRS bounds beyond
``NORMAL_QRS_MS`` (a wide QRS), and likewise only
``qt_interval.qtc_ms`` bounds beyond ``NORMAL_QTC_MS`` (Bazett's QTc from the QRS onset to the
T wave's end on the median beat), soft over ``QTC_MARGIN_MS``. Axis bounds are soft over
``AXIS_MARGIN_DEG`` on the circle: a measured -165 degrees lies 15 degrees past a bound of
+180. A QRS duration stated by a record whose rhythm is "irregular" or "regularly irregular"
is that of its ectopic beats (a premature ventricular contraction is wide, the beats around it
are not), which the median beat leaves out, so it is not checked. "Regularly irregular" (group
beating, bigeminy) and "variable" (atrial flutter: regular with a fixed conduction ratio,
irregular with variable block) are patterns no single number judges, and are not checked
either.

P waves stated "present" ask for a P wave standing out from the median beat's scatter (its
``p_snr``, `encoders.ecg.intervals`) by ``P_CLEAR_SNR`` standard errors, "absent" for none, soft
over ``P_SNR_MARGIN``. "Present" is checked only for records with a P wave before every QRS
(1:1; in AV block or dissociation it drifts and averages out) that state their rhythm's
regularity: a conduction pattern stating none (bundle branch or fascicular block) says
"present" of the usual sinus rhythm, but holds in atrial fibrillation too. "Absent" is checked
only for an irregularly irregular rhythm (atrial fibrillation), whose atrial activity is
unrelated to the QRS and averages out of the median beat; flutter waves conducted at a fixed
ratio are locked to the QRS and look like a P wave there. "Variable" and "hidden" are not
checked. T waves stated "inverted" or "upright" in listed leads ask for at least
``LEAD_SHARE`` of those measured to agree, soft over one lead (all of them agreeing costs
nothing), and so do "flattened" ones, a T wave under ``T_FLAT`` of the lead's QRS peak to peak;
other directions, and records listing no leads, are not checked. An ST segment stated
"depressed" in listed leads asks the same of the ST level 60 ms after the QRS, below that at
QRS onset by ``ST_DEPRESSED`` of the lead's QRS peak-to-peak. Elevation is not checked: it did
not separate on the PTB-XL train split, where infarcts are mostly old and normal V2-V3 ST sits
above the baseline.

``morphology.pathological_q_leads`` ask for a pathological Q wave or a QS complex
(`encoders.ecg.intervals.pathological_q`) in at least ``LEAD_SHARE`` of those measured, soft
over one lead, like the T-wave and ST findings, and ``morphology.r_prime_leads`` the same of a
terminal R' after the S wave (`encoders.ecg.intervals.terminal_r`): right bundle branch
block's rsR' in V1 or V2.

``morphology.voltage_criteria`` (Sokolow-Lyon, R in aVL, low voltage, a tall P...) are
alternatives: each sums its terms' amplitudes, the largest over each term's leads, measured on
the median beat in millivolts, and the recording is judged by the criterion it meets best, each
bound soft over ``VOLTAGE_MARGIN_SHARE`` of it (at least ``VOLTAGE_MARGIN_MV``). A limit stated
for one sex (Cornell's 2.8 mV in men, 2.0 mV in women) counts only where the record gives the
patient's sex and it matches. Amplitudes are measured only for records in millivolts: data
z-scored per lead (the PTB-XL sample) has none, and the logit stays as the model scored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np

from encoders.ecg.rhythm import RhythmMeasurement
from knowledge.leads import STANDARD_LEADS
from knowledge.schema import (
    DiagnosisKnowledge,
    PWaves,
    ValueRange,
    VoltageCriterion,
    VoltageWave,
)

# The log-compatibility is added to the logit with this weight. Chosen on the PTB-XL sample's
# validation split (seed 0-2 checkpoints; 0.5, 1, 1.5, 2 and 3 tried): seen labels 0.887 at 1,
# 0.888 at 2, held-out ones 0.931 at 1, 0.946 at 2 (0.950 at 3, with seen 0.886).
CRITERIA_WEIGHT = 2.0
RATE_MARGIN_BPM = 5.0
REGULAR_BELOW = 0.08
IRREGULARITY_MARGIN = 0.02
# An irregular rhythm's RR intervals differ by more than 120 ms, longest to shortest (sinus
# arrhythmia's textbook limit; a premature beat, a pause or an escape beat differs by more),
# each beat placed to within a 10 ms sample. Chosen over counting premature beats on the PTB-XL
# sample's train split (test carved out): AUROC of the check for SARRH 0.876 against 0.717,
# PVC 0.948 against 0.928, PAC 0.929 against 0.919; escapes and pauses are never premature.
IRREGULAR_RANGE_MS = 120.0
RR_RANGE_MARGIN_MS = 20.0
# 100 Hz samples are 10 ms apart and onsets and offsets each carry about one sample of error;
# the PR interval's P onset is flatter and less sure than a QRS edge.
QRS_MARGIN_MS = 15.0
PR_MARGIN_MS = 20.0
# The adult normal PR interval. A record stating it (sinus rhythm, normal ECG) assumes normal AV
# conduction rather than defining itself by it, and sinus rhythm goes on with a first-degree AV
# block, so only bounds beyond it (a long PR >= 200, a short one <= 120) are checked.
NORMAL_PR_MS = (120.0, 200.0)
# Likewise only QRS bounds beyond the normal range (a wide QRS, >= 110 ms) are checked: a stated
# narrow QRS describes a diagnosis with normal intraventricular conduction (an isolated
# fascicular block, a junctional rhythm, a normal ECG), which a coexisting bundle branch block
# widens without contradicting it. Chosen on the validation split (seeds 0-2): seen labels
# 0.892 -> 0.896 on every seed (left fascicular block recovers), held out unchanged.
NORMAL_QRS_MS = (60.0, 110.0)
# Bazett's QTc: a long QTc is 440 ms or more (450 in men, 460 in women), a short one 390 ms or
# less (`knowledge.consistency`); only such bounds are checked, not a normal record's "<= 460".
# The T wave's end is the least sure point of the beat, two or three 10 ms samples.
NORMAL_QTC_MS = (390.0, 440.0)
QTC_MARGIN_MS = 30.0
# The measured axis is the centre of a 30-degree hexaxial sector (`encoders.ecg.intervals`), so
# it lies up to 15 degrees from the true axis; half a sector plus 5 degrees of slack.
AXIS_MARGIN_DEG = 20.0
_ECTOPIC = ("irregular", "regularly irregular")
# The P-wave test of `encoders.ecg.intervals` (3 standard errors of the median beat's scatter),
# soft over one standard error.
P_CLEAR_SNR = 3.0
P_SNR_MARGIN = 1.0
# A T-wave or ST finding spans a territory, of which the record lists the union: at least half
# of the listed leads, soft over one lead (a territory's findings need two contiguous leads).
LEAD_SHARE = 0.5
_T_SIGN = {"upright": 1.0, "inverted": -1.0}
# A flat or low T wave is under a tenth of the R wave (the knowledge's own limit); taken of the
# lead's QRS peak to peak, steadier where R is small (PTB-XL train split, test carved out; share
# of the NDT record's leads against the other records: AUROC 0.814, of the R wave 0.778).
T_FLAT = 0.1
# ST depression of 0.05 mV (0.5 mm) counts in most leads; amplitudes are lost to z-scoring, so
# it is taken relative to the lead's own QRS, about 1 mV peak to peak: 5% of it.
ST_DEPRESSED = 0.05
# Millivolt limits are read to half a millimetre on paper (0.05 mV), and the 100 Hz median beat
# blunts sharp R and S peaks by up to about a tenth: each bound is soft over the larger of them.
VOLTAGE_MARGIN_MV = 0.05
VOLTAGE_MARGIN_SHARE = 0.1
_VOLTAGE_WAVES: tuple[str, ...] = get_args(VoltageWave)
_RR_VARIATION = "successive-RR variation {:.2f}"
_STEADY_RANGE = "RR range {:.0f} ms without premature beats"
_P_STRENGTH = "a P wave {:.1f} standard errors above the beat-to-beat scatter"
_SHARE = "{:.0%} of the listed leads measured"


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # NaN where nothing was measured: zeroed
        return np.nan_to_num(-np.logaddexp(0.0, -z), nan=0.0)


def _within(value: np.ndarray, bounds: ValueRange, margin: float) -> np.ndarray:
    """Log-compatibility of ``value`` with ``bounds``, each bound soft over ``margin``."""
    out = np.zeros(len(value))
    if bounds.min is not None:
        out += _log_sigmoid((value - bounds.min) / margin)
    if bounds.max is not None:
        out += _log_sigmoid((bounds.max - value) / margin)
    return out


def _beyond_normal(
    value: np.ndarray, bounds: ValueRange, normal: tuple[float, float], margin: float
) -> np.ndarray | None:
    """Log-compatibility of ``value`` with the bounds that lie outside the ``normal`` range (a
    long or a short interval); None when the record states none."""
    low = bounds.min if bounds.min is not None and bounds.min >= normal[1] else None
    high = bounds.max if bounds.max is not None and bounds.max <= normal[0] else None
    if low is None and high is None:
        return None
    return _within(value, ValueRange(min=low, max=high), margin)


def _axis_within(axis: np.ndarray, bounds: ValueRange) -> np.ndarray:
    """Log-compatibility of ``axis`` (degrees) with ``bounds``, each soft over
    ``AXIS_MARGIN_DEG``, taking the turn of each angle nearest the range's middle."""
    low = bounds.min if bounds.min is not None else -180.0
    high = bounds.max if bounds.max is not None else 180.0
    middle = (low + high) / 2
    return _within(middle + (axis - middle + 180.0) % 360.0 - 180.0, bounds, AXIS_MARGIN_DEG)


def _defines_atrial_rhythm(p_waves: PWaves | None, regularity: str | None) -> bool:
    """A record whose P wave precedes every QRS (so the median beat shows it) and that states
    its rhythm; one stating no rhythm (a bundle branch block) holds in atrial fibrillation too."""
    return p_waves is not None and p_waves.relation_to_qrs == "1:1" and regularity is not None


def _in_leads(found: np.ndarray, leads: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log-compatibility of a finding ``found`` per lead (recordings, 12: 1 seen, 0 not, NaN
    unmeasured) with its being seen in at least ``LEAD_SHARE`` of the measured ``leads``, soft
    over one lead and 0 where every measured lead shows it; and the share of the measured leads
    where it is seen (NaN: none measured)."""
    listed = found[:, [STANDARD_LEADS.index(lead) for lead in leads]]
    measured = (~np.isnan(listed)).sum(axis=1)
    seen = np.nansum(listed, axis=1)
    needed = LEAD_SHARE * measured
    log = _log_sigmoid(seen - needed) - _log_sigmoid(measured - needed)
    log = np.where(measured > 0, log, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return log, np.where(measured > 0, seen / measured, np.nan)


def _where_measured(value: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``seen`` as 1 or 0, NaN where ``value`` is NaN."""
    return np.where(np.isnan(value), np.nan, seen.astype(np.float64))


def _per_lead(measured: Sequence[RhythmMeasurement], name: str) -> np.ndarray:
    """(recordings, 12) per-lead measure ``name``, NaN where a recording has none."""
    return np.array([m.per_lead(name) for m in measured], dtype=np.float64).reshape(
        len(measured), len(STANDARD_LEADS)
    )


@dataclass(frozen=True)
class _Columns:
    """The measurements of many recordings as arrays: (recordings,), or (recordings, 12)."""

    rate: np.ndarray
    irregularity: np.ndarray
    rr_range: np.ndarray
    steady_rr_range: np.ndarray
    qrs: np.ndarray
    pr: np.ndarray
    qtc: np.ndarray
    axis: np.ndarray
    p_snr: np.ndarray
    polarity: np.ndarray
    t_size: np.ndarray
    q_wave: np.ndarray
    r_prime: np.ndarray
    depressed: np.ndarray
    amplitude_mv: dict[str, np.ndarray]  # wave (P, R, S, QRS) -> (recordings, 12)
    sex: np.ndarray  # (recordings,) "male", "female" or None

    @classmethod
    def of(cls, measured: Sequence[RhythmMeasurement]) -> _Columns:
        def column(name: str) -> np.ndarray:
            return np.array([getattr(m, name) for m in measured], dtype=np.float64)

        st_shift = _per_lead(measured, "st_deviation")
        return cls(
            rate=column("rate_bpm"),
            irregularity=column("rr_irregularity"),
            rr_range=column("rr_range_ms"),
            steady_rr_range=column("steady_rr_range_ms"),
            qrs=column("qrs_ms"),
            pr=column("pr_ms"),
            qtc=column("qtc_ms"),
            axis=column("qrs_axis_deg"),
            p_snr=column("p_snr"),
            polarity=_per_lead(measured, "t_polarity"),
            t_size=_per_lead(measured, "t_size"),
            q_wave=_per_lead(measured, "q_wave"),
            r_prime=_per_lead(measured, "r_prime"),
            depressed=_where_measured(st_shift, st_shift < -ST_DEPRESSED),
            amplitude_mv={w: _per_lead(measured, f"{w.lower()}_mv") for w in _VOLTAGE_WAVES},
            sex=np.array([m.sex for m in measured], dtype=object),
        )


@dataclass(frozen=True)
class _Check:
    log: np.ndarray  # (recordings,) log-compatibility, <= 0
    stated: str  # what the knowledge states
    measured: np.ndarray  # (recordings,) the measured value it was checked against
    shown: str  # how one measured value reads


def _in_leads_check(found: np.ndarray, leads: Sequence[str], finding: str) -> _Check:
    """The check of a ``finding`` stated in ``leads``, seen per lead as ``found``."""
    log, share = _in_leads(found, leads)
    return _Check(log, f"{finding} in {', '.join(leads)}", share, f"{finding} in {_SHARE}")


def _checks(record: DiagnosisKnowledge, m: _Columns) -> dict[str, _Check]:
    """Each criterion ``record`` states that is checked, by name."""
    rhythm, morphology = record.rhythm, record.morphology
    regularity = rhythm.regularity if rhythm is not None else None
    out: dict[str, _Check] = {}
    if rhythm is not None and rhythm.rate_bpm is not None:
        log = _within(m.rate, rhythm.rate_bpm, RATE_MARGIN_BPM)
        out["rate"] = _Check(log, rhythm.rate_bpm.describe("bpm"), m.rate, "{:.0f} bpm")
    if regularity == "regular":
        log = _log_sigmoid((REGULAR_BELOW - m.irregularity) / IRREGULARITY_MARGIN)
        out["regularity"] = _Check(log, regularity, m.irregularity, _RR_VARIATION)
    elif regularity == "irregularly irregular":
        log = _log_sigmoid((m.irregularity - REGULAR_BELOW) / IRREGULARITY_MARGIN)
        out["regularity"] = _Check(log, regularity, m.irregularity, _RR_VARIATION)
    elif regularity == "irregular":
        log = _log_sigmoid((m.rr_range - IRREGULAR_RANGE_MS) / RR_RANGE_MARGIN_MS)
        out["regularity"] = _Check(log, regularity, m.rr_range, "RR range {:.0f} ms")
    if rhythm is not None and rhythm.rr_range_ms is not None:
        log = _within(m.steady_rr_range, rhythm.rr_range_ms, RR_RANGE_MARGIN_MS)
        stated = rhythm.rr_range_ms.describe("ms")
        out["RR range"] = _Check(log, stated, m.steady_rr_range, _STEADY_RANGE)
    if rhythm is not None and rhythm.pr_interval_ms is not None:
        log_pr = _beyond_normal(m.pr, rhythm.pr_interval_ms, NORMAL_PR_MS, PR_MARGIN_MS)
        if log_pr is not None:
            stated = rhythm.pr_interval_ms.describe("ms")
            out["PR interval"] = _Check(log_pr, stated, m.pr, "{:.0f} ms")
    qrs_complex = morphology.qrs_complex if morphology is not None else None
    if qrs_complex is not None and qrs_complex.duration_ms and regularity not in _ECTOPIC:
        log_qrs = _beyond_normal(m.qrs, qrs_complex.duration_ms, NORMAL_QRS_MS, QRS_MARGIN_MS)
        if log_qrs is not None:
            stated = qrs_complex.duration_ms.describe("ms")
            out["QRS duration"] = _Check(log_qrs, stated, m.qrs, "{:.0f} ms")
    qt = morphology.qt_interval if morphology is not None else None
    if qt is not None and qt.qtc_ms is not None:
        log_qtc = _beyond_normal(m.qtc, qt.qtc_ms, NORMAL_QTC_MS, QTC_MARGIN_MS)
        if log_qtc is not None:
            out["QTc"] = _Check(log_qtc, qt.qtc_ms.describe("ms"), m.qtc, "{:.0f} ms")
    if morphology is not None and morphology.qrs_axis_deg is not None:
        log = _axis_within(m.axis, morphology.qrs_axis_deg)
        axis = morphology.qrs_axis_deg
        stated = f"{_degrees(axis.min, -180)} to {_degrees(axis.max, 180)}"
        out["QRS axis"] = _Check(log, stated, m.axis, "{:+.0f} degrees")
    p_waves = rhythm.p_waves if rhythm is not None else None
    presence = p_waves.presence if p_waves is not None else None
    if presence == "present" and _defines_atrial_rhythm(p_waves, regularity):
        log = _log_sigmoid((m.p_snr - P_CLEAR_SNR) / P_SNR_MARGIN)
        out["P waves"] = _Check(log, presence, m.p_snr, _P_STRENGTH)
    elif presence == "absent" and regularity == "irregularly irregular":
        log = _log_sigmoid((P_CLEAR_SNR - m.p_snr) / P_SNR_MARGIN)
        out["P waves"] = _Check(log, presence, m.p_snr, _P_STRENGTH)
    t_wave = morphology.t_wave if morphology is not None else None
    if t_wave is not None and t_wave.leads and t_wave.direction in (*_T_SIGN, "flattened"):
        if t_wave.direction == "flattened":
            found = _where_measured(m.t_size, m.t_size < T_FLAT)
        else:
            found = _where_measured(m.polarity, m.polarity == _T_SIGN[t_wave.direction])
        out["T waves"] = _in_leads_check(found, t_wave.leads, t_wave.direction)
    st = morphology.st_segment if morphology is not None else None
    if st is not None and st.direction == "depressed" and st.leads:
        out["ST segment"] = _in_leads_check(m.depressed, st.leads, "depressed")
    if morphology is not None and morphology.pathological_q_leads:
        out["Q waves"] = _in_leads_check(m.q_wave, morphology.pathological_q_leads, "pathological")
    if morphology is not None and morphology.r_prime_leads:
        out["R' waves"] = _in_leads_check(m.r_prime, morphology.r_prime_leads, "R'")
    if morphology is not None and morphology.voltage_criteria:
        log, total = _voltage(morphology.voltage_criteria, m.amplitude_mv, m.sex)
        stated = " or ".join(_describe_voltage(c) for c in morphology.voltage_criteria)
        out["voltage"] = _Check(log, stated, total, "{:.2f} mV on the criterion met best")
    return out


def _voltage(
    criteria: Sequence[VoltageCriterion], amplitude_mv: dict[str, np.ndarray], sex: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log-compatibility with the voltage criterion each recording meets best (0 where none
    can be measured), and that criterion's measured sum (mV; NaN: none measured). A limit
    stated for one sex applies only to recordings of a patient known to be of that sex."""
    logs, totals = [], []
    for criterion in criteria:
        total = np.sum([_largest(amplitude_mv[t.wave], t.leads) for t in criterion.terms], axis=0)
        if criterion.sex is not None:
            total = np.where(sex == criterion.sex, total, np.nan)
        log = np.zeros(len(total))
        if (low := criterion.sum_mv.min) is not None:
            log += _log_sigmoid((total - low) / _voltage_margin(low))
        if (high := criterion.sum_mv.max) is not None:
            log += _log_sigmoid((high - total) / _voltage_margin(high))
        logs.append(np.where(np.isnan(total), -np.inf, log))
        totals.append(total)
    best = np.argmax(logs, axis=0)[None]
    log = np.take_along_axis(np.array(logs), best, axis=0)[0]
    return np.where(np.isfinite(log), log, 0.0), np.take_along_axis(np.array(totals), best, 0)[0]


def _voltage_margin(bound: float) -> float:
    return max(VOLTAGE_MARGIN_MV, VOLTAGE_MARGIN_SHARE * bound)


def _largest(amplitude: np.ndarray, leads: Sequence[str]) -> np.ndarray:
    """(recordings,) the largest of ``amplitude`` (recordings, 12) over ``leads``; NaN when
    none of them is measured."""
    listed = amplitude[:, [STANDARD_LEADS.index(lead) for lead in leads]]
    measured = ~np.isnan(listed).all(axis=1)
    return np.where(measured, np.where(np.isnan(listed), -np.inf, listed).max(axis=1), np.nan)


def _describe_voltage(criterion: VoltageCriterion) -> str:
    terms = " + ".join(f"{t.wave} in {'/'.join(t.leads)}" for t in criterion.terms)
    only = f", {criterion.sex} patients only" if criterion.sex else ""
    return f"{criterion.name} ({terms}) {criterion.sum_mv.describe('mV')}{only}"


def _degrees(value: float | None, default: float) -> str:
    return f"{default if value is None else value:+g} degrees"


def criteria_log_prior(
    records: Sequence[DiagnosisKnowledge | None], measured: Sequence[RhythmMeasurement]
) -> np.ndarray:
    """(recordings, labels) log-compatibility, <= 0, of each recording with each record, times
    ``CRITERIA_WEIGHT``: what is added to the model's logit."""
    columns = _Columns.of(measured)
    prior = np.zeros((len(measured), len(records)))
    for i, record in enumerate(records):
        if record is not None:
            for check in _checks(record, columns).values():
                prior[:, i] += check.log
    return CRITERIA_WEIGHT * prior


def describe_criteria(record: DiagnosisKnowledge, measured: RhythmMeasurement) -> list[str]:
    """One line per criterion of ``record`` checked against the recording: what the knowledge
    states, what was measured, and what it adds to the logit (0: fits, or not measured)."""
    lines = []
    for name, check in _checks(record, _Columns.of([measured])).items():
        value = float(check.measured[0])
        shown = "not measurable here" if np.isnan(value) else check.shown.format(value)
        lines.append(
            f"{name}: knowledge {check.stated}; measured {shown}; "
            f"{CRITERIA_WEIGHT * float(check.log[0]):+.2f} on the logit"
        )
    return lines
