"""Heart rate, RR irregularity, premature beats, intervals, QRS axis, P wave and T waves
measured from a preprocessed 12-lead window.

QRS complexes are the steepest deflections in every lead, so beats are the peaks of the
slope energy summed over the present leads (smoothed over 80 ms), at least 270 ms apart
(rates up to 220 bpm) and standing out from the window's own baseline of that energy. From
the beats: the rate is 60 / median RR, and the irregularity the median absolute difference of
successive RR intervals over the median RR (about 0.02 in sinus rhythm, 0.15-0.3 in atrial
fibrillation), and the RR range the longest RR interval less the shortest (premature or escape
beats, pauses and sinus arrhythmia widen it). A premature beat comes after an RR interval
shorter than ``PREMATURE_BELOW`` of the median and is followed by a longer one (the
compensatory pause). QRS duration, PR interval, QT interval (and Bazett's QTc from it), the
frontal QRS axis, the P wave's strength and per lead the T wave's polarity, the ST deviation,
pathological Q waves and a terminal R' come from the median beat (`encoders.ecg.intervals`),
and so do the wave amplitudes in mV for records in millivolts (`measure_prepared`). Fewer than
three beats in the window give NaN for all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import signal as sps

from encoders.ecg.intervals import IntervalMeasurement, measure_intervals
from encoders.ecg.preprocess import PreprocessedECG, Preprocessing
from knowledge.leads import STANDARD_LEADS

_SMOOTH_S = 0.08
_REFRACTORY_S = 0.27
_PROMINENCE = 0.35  # of the spread between the energy's median and its 99th percentile
# A premature atrial or ventricular beat comes at least 15-20% early; sinus rhythm's
# beat-to-beat variation at rest stays within ~10% (sinus arrhythmia is gradual, not a jump).
PREMATURE_BELOW = 0.85


@dataclass(frozen=True, kw_only=True)
class RhythmMeasurement(IntervalMeasurement):
    """The rhythm of a window, and what its median beat shows (`IntervalMeasurement`)."""

    rate_bpm: float = float("nan")
    rr_irregularity: float = float("nan")
    beats: int = 0
    premature_beats: float = float("nan")
    qtc_ms: float = float("nan")  # Bazett: QT over the square root of the median RR (s)
    rr_range_ms: float = float("nan")  # the longest RR interval less the shortest
    steady_rr_range_ms: float = float("nan")  # the same without premature beats and pauses
    sex: str | None = None  # the patient's, from the record: for limits stated for one sex

    def per_lead(self, name: str) -> tuple[float, ...]:
        """The per-lead measure ``name`` (``t_polarity``, ``st_deviation``, ``t_size``,
        ``q_wave``, ``r_prime``, ``r_mv``, ``s_mv``, ``qrs_mv`` or ``p_mv``), one value per
        standard lead: NaN for every lead where it was not measured."""
        values: tuple[float, ...] = getattr(self, name)
        if len(values) == len(STANDARD_LEADS):
            return values
        return (float("nan"),) * len(STANDARD_LEADS)


def detect_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of the QRS complexes in window ``x`` (leads, samples) at ``fs`` Hz."""
    slopes = np.abs(np.diff(np.asarray(x, dtype=np.float64), axis=-1))
    energy = slopes.sum(axis=0)
    width = max(1, round(_SMOOTH_S * fs))
    energy = np.convolve(energy, np.ones(width) / width, mode="same")
    spread = np.percentile(energy, 99) - np.median(energy)
    if not spread > 0:
        return np.empty(0, dtype=np.int64)
    peaks, _ = sps.find_peaks(
        energy, distance=max(1, round(_REFRACTORY_S * fs)), prominence=_PROMINENCE * spread
    )
    return peaks


def _premature(rr: np.ndarray) -> np.ndarray:
    """(len(rr) - 1,) whether the beat ending each RR interval but the last is premature: the
    interval is under ``PREMATURE_BELOW`` of the median and the next one is longer."""
    return (rr[:-1] < PREMATURE_BELOW * np.median(rr)) & (rr[1:] > rr[:-1])


def steady_rr_range(rr: np.ndarray, premature: np.ndarray | None = None) -> float:
    """The RR range (s) left without each premature beat's short interval and the pause after
    it (``premature``: `_premature` of ``rr``, found here when not given): how much the
    underlying rhythm itself varies; NaN when fewer than two intervals are left."""
    premature = _premature(rr) if premature is None else premature
    ectopic = np.zeros(len(rr), dtype=bool)
    ectopic[:-1] |= premature
    ectopic[1:] |= premature
    steady = rr[~ectopic]
    return float(np.ptp(steady)) if len(steady) >= 2 else float("nan")


def measure_rhythm(
    x: np.ndarray, fs: float, lead_mv: np.ndarray | None = None
) -> RhythmMeasurement:
    """What `RhythmMeasurement` holds for one window ``x`` (leads, samples; standard lead
    order) sampled at ``fs`` Hz; with ``lead_mv``, the millivolts of one unit of each lead
    of ``x``, also the wave amplitudes per lead in mV."""
    beats = detect_beats(x, fs)
    if len(beats) < 3:
        return RhythmMeasurement(beats=len(beats))
    rr = np.diff(beats) / fs
    median = float(np.median(rr))
    irregularity = float(np.median(np.abs(np.diff(rr)))) / median if len(rr) > 1 else 0.0
    intervals = measure_intervals(np.asarray(x, dtype=np.float64), beats, fs, median, lead_mv)
    premature = _premature(rr)
    return RhythmMeasurement(
        **asdict(intervals),
        rate_bpm=60.0 / median,
        rr_irregularity=irregularity,
        beats=len(beats),
        premature_beats=float(premature.sum()),
        qtc_ms=intervals.qt_ms / np.sqrt(median),
        rr_range_ms=1000.0 * float(np.ptp(rr)),
        steady_rr_range_ms=1000.0 * steady_rr_range(rr, premature),
    )


def measure_prepared(
    preprocessing: Preprocessing, ecg: PreprocessedECG, units: str | None, sex: str | None = None
) -> RhythmMeasurement:
    """`measure_rhythm` of the window ``preprocessing`` makes of the prepared ``ecg``, with the
    wave amplitudes in mV when the record's ``units`` are millivolts (z-scored data has none),
    and the patient's ``sex`` (``male``/``female``) where the record states it."""
    window, scale = preprocessing.scaled_window(ecg)
    measured = measure_rhythm(window.x, preprocessing.fs, scale if units == "mV" else None)
    return replace(measured, sex=sex)
