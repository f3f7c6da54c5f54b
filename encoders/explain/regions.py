"""Time regions of an attribution map: the windows where the attribution is highest.

The envelope is the absolute attribution summed over the leads and smoothed with a moving
average (``smooth_s``, 80 ms by default, about a QRS width). Regions are found greedily: take
the highest point of the envelope not yet claimed, grow a region around it while the envelope
stays above ``rel_threshold`` (half) of that peak, then claim the rest of the peak's hill (while
the envelope keeps falling) so that the next region is a different peak and not the shoulder
of this one. The search stops after ``k`` regions or when the next peak is below ``min_peak``
(a quarter) of the highest one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from knowledge.leads import STANDARD_LEADS

DEFAULT_REGIONS = 3
DEFAULT_SMOOTH_S = 0.08
DEFAULT_REL_THRESHOLD = 0.5
DEFAULT_MIN_PEAK = 0.25
MAX_REGION_LEADS = 3


@dataclass(frozen=True)
class Region:
    """A time window of high attribution.

    ``share``: the window's part of the total absolute attribution (all leads, whole record).
    ``contribution``: the window's signed attribution (positive: it raises the logit).
    ``leads``: the dominant leads and their shares of the window's absolute attribution, most
    important first: the fewest leads that hold half of it, at most three.
    """

    start_s: float
    end_s: float
    share: float
    contribution: float
    leads: tuple[tuple[str, float], ...]

    @property
    def lead_names(self) -> tuple[str, ...]:
        """The dominant leads' names, most important first."""
        return tuple(lead for lead, _ in self.leads)


def time_regions(
    attribution: np.ndarray,
    fs: float,
    *,
    k: int = DEFAULT_REGIONS,
    smooth_s: float = DEFAULT_SMOOTH_S,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
    min_peak: float = DEFAULT_MIN_PEAK,
) -> tuple[Region, ...]:
    """Up to ``k`` regions of ``attribution`` ``(12, T)`` at ``fs`` Hz, highest peak first.

    See the module docstring for the method; an all-zero attribution has no regions.
    """
    if attribution.ndim != 2 or attribution.shape[0] != len(STANDARD_LEADS):
        raise ValueError(f"attribution must have shape (12, T), got {attribution.shape}")
    if not 0 < rel_threshold <= 1 or not 0 <= min_peak <= 1:
        raise ValueError(
            f"rel_threshold must be in (0, 1] and min_peak in [0, 1], "
            f"got {rel_threshold} and {min_peak}"
        )
    magnitude = np.abs(attribution.astype(np.float64))
    total = magnitude.sum()
    if total == 0:
        return ()
    width = max(1, round(smooth_s * fs))
    envelope = uniform_filter1d(magnitude.sum(axis=0), width, mode="nearest")
    highest = envelope.max()
    slope = np.diff(envelope)
    falls_left = np.append(slope >= 0, False)  # sample i is not above sample i + 1
    falls_right = np.insert(slope <= 0, 0, False)  # sample i is not above sample i - 1
    free = np.ones(envelope.size, dtype=bool)
    regions: list[Region] = []
    while len(regions) < k and free.any():
        peak = int(np.argmax(np.where(free, envelope, -np.inf)))
        if envelope[peak] <= 0 or envelope[peak] < min_peak * highest:
            break
        above = free & (envelope >= rel_threshold * envelope[peak])
        start, end = _span(peak, above, above)
        hill_start, hill_end = _span(peak, free & falls_left, free & falls_right)
        free[min(start, hill_start) : max(end, hill_end)] = False
        regions.append(_region(attribution, magnitude, total, start, end, fs))
    return tuple(regions)


def _span(peak: int, left_ok: np.ndarray, right_ok: np.ndarray) -> tuple[int, int]:
    """``[start, end)`` around ``peak``, extended left over ``left_ok`` samples and right over
    ``right_ok`` samples."""
    start, end = peak, peak + 1
    while start > 0 and left_ok[start - 1]:
        start -= 1
    while end < right_ok.size and right_ok[end]:
        end += 1
    return start, end


def _region(
    attribution: np.ndarray, magnitude: np.ndarray, total: float, start: int, end: int, fs: float
) -> Region:
    per_lead = magnitude[:, start:end].sum(axis=1)
    in_region = per_lead.sum()
    shares = per_lead / in_region if in_region > 0 else per_lead
    leads: list[tuple[str, float]] = []
    for index in np.argsort(-shares, kind="stable"):
        if shares[index] <= 0 or len(leads) == MAX_REGION_LEADS:
            break
        leads.append((STANDARD_LEADS[index], float(shares[index])))
        if sum(share for _, share in leads) >= 0.5:
            break
    return Region(
        start_s=start / fs,
        end_s=end / fs,
        share=float(in_region / total),
        contribution=float(attribution[:, start:end].sum(dtype=np.float64)),
        leads=tuple(leads),
    )
