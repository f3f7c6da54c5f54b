"""Heart rate and RR irregularity measured from a preprocessed 12-lead window.

QRS complexes are the steepest deflections in every lead, so beats are the peaks of the
slope energy summed over the present leads (smoothed over 80 ms), at least 270 ms apart
(rates up to 220 bpm) and standing out from the window's own baseline of that energy. From
the beats: the rate is 60 / median RR, and the irregularity the median absolute difference of
successive RR intervals over the median RR (about 0.02 in sinus rhythm, 0.15-0.3 in atrial
fibrillation). Fewer than three beats in the window give NaN for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

_SMOOTH_S = 0.08
_REFRACTORY_S = 0.27
_PROMINENCE = 0.35  # of the spread between the energy's median and its 99th percentile


@dataclass(frozen=True)
class RhythmMeasurement:
    rate_bpm: float
    rr_irregularity: float
    beats: int


def measure_rhythm(x: np.ndarray, fs: float) -> RhythmMeasurement:
    """Rate and RR irregularity of one window ``x`` (leads, samples) sampled at ``fs`` Hz."""
    slopes = np.abs(np.diff(np.asarray(x, dtype=np.float64), axis=-1))
    energy = slopes.sum(axis=0)
    width = max(1, round(_SMOOTH_S * fs))
    energy = np.convolve(energy, np.ones(width) / width, mode="same")
    spread = np.percentile(energy, 99) - np.median(energy)
    if not spread > 0:
        return RhythmMeasurement(float("nan"), float("nan"), 0)
    peaks, _ = sps.find_peaks(
        energy, distance=max(1, round(_REFRACTORY_S * fs)), prominence=_PROMINENCE * spread
    )
    if len(peaks) < 3:
        return RhythmMeasurement(float("nan"), float("nan"), len(peaks))
    rr = np.diff(peaks) / fs
    median = float(np.median(rr))
    irregularity = float(np.median(np.abs(np.diff(rr)))) / median if len(rr) > 1 else 0.0
    return RhythmMeasurement(60.0 / median, irregularity, len(peaks))
