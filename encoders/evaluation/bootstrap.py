"""Percentile bootstrap over recordings: seeded resample counts and intervals.

A resample draws N recordings with replacement from the N evaluated recordings; it is held as
a row of counts (how often each recording was drawn), so every metric can be computed as a
weighted metric of the original arrays and all metrics of one evaluation share the same
resamples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

_DRAW_BLOCK = 50  # resamples drawn per call to the generator (fixed, so results depend on seed)


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are made: resamples of recordings, percentile method, seeded."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise ValueError(f"bootstrap resamples must be >= 0, got {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"bootstrap confidence must be in (0, 1), got {self.confidence}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "resamples": self.resamples,
            "confidence": self.confidence,
            "seed": self.seed,
            "unit": "recording",
            "method": "percentile",
        }


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap interval.

    ``value`` is None when the metric is undefined on the evaluated set. ``resamples`` is the
    number of resamples in which the metric was defined; the interval is taken over those only
    (None when there are none).
    """

    value: float | None
    low: float | None = None
    high: float | None = None
    resamples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "resamples": self.resamples,
        }


def resample_counts(n: int, settings: BootstrapSettings) -> np.ndarray:
    """(resamples, n) float64 counts: row b says how often each recording is in resample b."""
    rng = np.random.default_rng(settings.seed)
    counts = np.empty((settings.resamples, n), dtype=np.float64)
    for start in range(0, settings.resamples, _DRAW_BLOCK):
        block = min(_DRAW_BLOCK, settings.resamples - start)
        drawn = rng.integers(0, n, size=(block, n)) + n * np.arange(block)[:, None]
        counts[start : start + block] = np.bincount(drawn.ravel(), minlength=block * n).reshape(
            block, n
        )
    return counts


def row_chunks(rows: int, width: int, budget: int = 1 << 21) -> Iterator[slice]:
    """Slices of ``rows`` so that one chunk of a (rows, width) array has about ``budget`` cells."""
    step = max(1, budget // max(width, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def estimate(point: float, samples: np.ndarray, settings: BootstrapSettings) -> Estimate:
    """The point value with the percentile interval of its resamples (NaN = undefined there)."""
    if not np.isfinite(point):
        return Estimate(None)
    defined = samples[np.isfinite(samples)]
    if defined.size == 0:
        return Estimate(float(point))
    tail = 50.0 * (1.0 - settings.confidence)
    low, high = np.percentile(defined, [tail, 100.0 - tail])
    return Estimate(float(point), float(low), float(high), int(defined.size))
