"""The one preprocessing pipeline from an `ECGRecord` to a model input; recorded with each model.

`Preprocessing.apply` runs two stages, which a dataset cache can run separately:

1. `Preprocessing.prepare`, per record: reorder the leads to the standard 12 (I, II, III, aVR,
   aVL, aVF, V1-V6); a lead that is absent, or has no finite sample, is zero-filled, masked
   (``lead_mask`` False) and reported once per record in the log. Fill non-finite gaps in the
   other leads: gaps up to ``max_gap_s`` are linearly interpolated, longer ones are set to the
   lead's median, a flat baseline that is zero after filtering. Resample to ``fs`` with a
   polyphase filter (`scipy.signal.resample_poly`, whose FIR low-pass removes aliasing) using the
   exact rational ratio of the two rates (500 -> 100 Hz is 1/5, 400 -> 100 Hz 1/4, 250 -> 100 Hz
   2/5, 257 -> 100 Hz 100/257). Band-pass with a zero-phase Butterworth filter
   (`scipy.signal.sosfiltfilt`), skipped when the record says it was already filtered within the
   pipeline's pass band (``ECGRecord.bandpass_hz``).
2. `Preprocessing.window`, per draw: crop to ``window_s`` (start, centre, or a random offset from
   a numpy ``Generator``), normalise each lead to zero mean and unit standard deviation over the
   window (dividing by ``max(std, eps)``, so a flat lead stays flat instead of blowing up), then
   pad records shorter than the window with zeros at the end. ``normalize="record"`` instead
   divides every lead by one scale, the median standard deviation of the present leads, so the
   leads keep their relative amplitudes (what voltage criteria such as LVH's compare); it suits
   data in physical units, not data already z-scored per lead.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from scipy import signal as sps

from encoders.ecg.record import ECGRecord
from knowledge.leads import STANDARD_LEADS

logger = logging.getLogger(__name__)

CropMode = Literal["start", "center", "random"]
_CROP_MODES = ("start", "center", "random")
_NORMALIZATIONS = ("zscore", "record", "none")
_PREPARE_FIELDS = ("fs", "bandpass_hz", "filter_order", "max_gap_s")
_MAX_DENOMINATOR = 1000  # resampling ratios are exact for rates with up to 3 decimals' structure


@dataclass(frozen=True, eq=False)
class PreprocessedECG:
    """A record in the standard 12-lead order at the pipeline's rate, with its lead mask.

    After `Preprocessing.prepare`, ``x`` has the record's full length; after
    `Preprocessing.window` (and `Preprocessing.apply`) it has exactly the window's length.
    """

    x: np.ndarray
    lead_mask: np.ndarray
    record_id: str


@dataclass(frozen=True)
class Preprocessing:
    """Settings of the preprocessing pipeline (see the module docstring for the steps).

    Defaults follow the reference model: 100 Hz, 10 s windows (1000 samples), 0.5-40 Hz band-pass,
    per-lead z-score. ``bandpass_hz=None`` disables filtering, ``normalize="record"`` keeps the
    leads' relative amplitudes, ``normalize="none"`` keeps units.
    """

    fs: float = 100.0
    window_s: float = 10.0
    crop: CropMode = "start"
    bandpass_hz: tuple[float, float] | None = (0.5, 40.0)
    filter_order: int = 4
    normalize: Literal["zscore", "record", "none"] = "zscore"
    eps: float = 1e-3
    max_gap_s: float = 0.1

    def __post_init__(self) -> None:
        if not math.isfinite(self.fs) or self.fs <= 0:
            raise ValueError(f"Preprocessing.fs must be a positive rate in Hz, got {self.fs!r}")
        if not math.isfinite(self.window_s) or self.n_samples < 1:
            raise ValueError(f"Preprocessing.window_s too short: {self.window_s!r} s")
        if self.crop not in _CROP_MODES:
            raise ValueError(f"Preprocessing.crop must be one of {_CROP_MODES}, got {self.crop!r}")
        if self.normalize not in _NORMALIZATIONS:
            raise ValueError(
                f"Preprocessing.normalize must be one of {_NORMALIZATIONS}, got {self.normalize!r}"
            )
        if self.bandpass_hz is not None:
            low, high = (float(edge) for edge in self.bandpass_hz)
            if not 0 < low < high < self.fs / 2:
                raise ValueError(
                    f"Preprocessing.bandpass_hz must satisfy 0 < low < high < fs/2 = "
                    f"{self.fs / 2:g} Hz, got {self.bandpass_hz!r}"
                )
            object.__setattr__(self, "bandpass_hz", (low, high))
        if self.filter_order < 1:
            raise ValueError(f"Preprocessing.filter_order must be >= 1, got {self.filter_order}")
        if not self.eps > 0:
            raise ValueError(f"Preprocessing.eps must be positive, got {self.eps!r}")
        if not self.max_gap_s >= 0:
            raise ValueError(f"Preprocessing.max_gap_s must be >= 0, got {self.max_gap_s!r}")

    @property
    def n_samples(self) -> int:
        """Window length in samples (1000 for 10 s at 100 Hz)."""
        return round(self.fs * self.window_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, stored with every model checkpoint."""
        data = asdict(self)
        data["bandpass_hz"] = list(self.bandpass_hz) if self.bandpass_hz is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Rebuild settings written by `to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Preprocessing settings {unknown}; known: {sorted(known)}")
        values = dict(data)
        if values.get("bandpass_hz") is not None:
            values["bandpass_hz"] = tuple(values["bandpass_hz"])
        return cls(**values)

    def prepare_key(self) -> dict[str, Any]:
        """The settings that `prepare` depends on (a cache of prepared records is keyed by them)."""
        return {key: value for key, value in self.to_dict().items() if key in _PREPARE_FIELDS}

    def apply(self, record: ECGRecord, rng: np.random.Generator | None = None) -> PreprocessedECG:
        """Preprocess one record into a (12, n_samples) float32 window and its lead mask."""
        return self.window(self.prepare(record), rng)

    def prepare(self, record: ECGRecord) -> PreprocessedECG:
        """Stage 1: standard lead order, gaps filled, resampled and filtered; full length."""
        n = record.n_samples
        x = np.zeros((len(STANDARD_LEADS), n), dtype=np.float64)
        mask = np.zeros(len(STANDARD_LEADS), dtype=bool)
        max_gap = round(self.max_gap_s * record.fs)
        for row, lead in zip(record.signal, record.leads, strict=True):
            index = STANDARD_LEADS.index(lead)
            filled = fill_gaps(row, max_gap)
            if filled is not None:
                x[index], mask[index] = filled, True
        if not mask.all():
            missing = tuple(
                lead for lead, present in zip(STANDARD_LEADS, mask, strict=True) if not present
            )
            _report_missing_leads(record.source, record.record_id, missing)
        x = resample(x, record.fs, self.fs)
        if self.bandpass_hz is not None and not _within(record.bandpass_hz, self.bandpass_hz):
            sos = _butterworth(self.filter_order, self.bandpass_hz, self.fs)
            x[mask] = sps.sosfiltfilt(sos, x[mask], axis=-1)
        return PreprocessedECG(x.astype(np.float32), mask, record.record_id)

    def window(
        self, ecg: PreprocessedECG, rng: np.random.Generator | None = None
    ) -> PreprocessedECG:
        """Stage 2: crop to the window, normalise each lead, zero-pad; (12, n_samples) float32."""
        return self.scaled_window(ecg, rng)[0]

    def scaled_window(
        self, ecg: PreprocessedECG, rng: np.random.Generator | None = None
    ) -> tuple[PreprocessedECG, np.ndarray]:
        """`window`, and (12,) what one unit of each of its leads is in the record's own units:
        the divisor of the normalisation, 1 without one."""
        x = ecg.x
        n = self.n_samples
        if x.shape[-1] > n:
            start = self._crop_start(x.shape[-1] - n, rng)
            x = x[:, start : start + n]
        x = x.astype(np.float32, copy=True)
        scale = np.ones((len(x), 1), dtype=np.float32)
        if self.normalize != "none":
            x = x - x.mean(axis=-1, keepdims=True)
            std = x.std(axis=-1, keepdims=True)
            if self.normalize == "record":
                present = std[ecg.lead_mask]
                std = np.full_like(std, np.median(present) if present.size else 1.0)
            scale = np.maximum(std, self.eps)
            x = x / scale
        x[~ecg.lead_mask] = 0.0
        if x.shape[-1] < n:
            x = np.pad(x, ((0, 0), (0, n - x.shape[-1])))
        window = PreprocessedECG(
            np.ascontiguousarray(x, dtype=np.float32), ecg.lead_mask, ecg.record_id
        )
        return window, scale[:, 0]

    def _crop_start(self, slack: int, rng: np.random.Generator | None) -> int:
        if self.crop == "start":
            return 0
        if self.crop == "center":
            return slack // 2
        if rng is None:
            raise ValueError("Preprocessing.crop='random' needs a numpy Generator (rng=)")
        return int(rng.integers(0, slack + 1))


def fill_gaps(lead: np.ndarray, max_gap: int) -> np.ndarray | None:
    """One lead with non-finite runs filled (see the module docstring); None if none is finite."""
    lead = np.asarray(lead, dtype=np.float64)
    finite = np.isfinite(lead)
    if finite.all():
        return lead
    if not finite.any():
        return None
    positions = np.arange(lead.size)
    filled = np.interp(positions, positions[finite], lead[finite])
    # Runs of non-finite samples: starts and ends from the edges of the ~finite indicator.
    edges = np.diff(np.concatenate(([0], (~finite).astype(np.int8), [0])))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if stop - start > max_gap:
            filled[start:stop] = np.median(lead[finite])
    return filled


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample along the last axis with a polyphase filter at the rational ratio fs_out/fs_in."""
    if fs_in == fs_out:
        return x
    ratio = Fraction(fs_out / fs_in).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(ratio) * fs_in - fs_out) > 1e-6 * fs_out:
        raise ValueError(f"no rational resampling ratio for {fs_in:g} Hz -> {fs_out:g} Hz")
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1, padtype="line")


def resampled_length(n_samples: int, fs_in: float, fs_out: float) -> int:
    """Length of an ``n_samples`` signal after `resample` (``ceil(n * up / down)``)."""
    if fs_in == fs_out:
        return n_samples
    ratio = Fraction(fs_out / fs_in).limit_denominator(_MAX_DENOMINATOR)
    return -(-n_samples * ratio.numerator // ratio.denominator)


def _within(done: tuple[float, float] | None, wanted: tuple[float, float]) -> bool:
    """Whether a signal filtered with pass band ``done`` already lies within ``wanted``."""
    return done is not None and done[0] >= wanted[0] and done[1] <= wanted[1]


@functools.lru_cache(maxsize=32)
def _butterworth(order: int, band: tuple[float, float], fs: float) -> np.ndarray:
    return sps.butter(order, band, btype="bandpass", fs=fs, output="sos")


@functools.lru_cache(maxsize=65536)
def _report_missing_leads(source: str, record_id: str, missing: tuple[str, ...]) -> None:
    """Log missing leads once per record and process (the cache drops repeated reports)."""
    logger.warning(
        "record %s (%s): leads %s missing; zero-filled and masked",
        record_id,
        source,
        ", ".join(missing),
    )
