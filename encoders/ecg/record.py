"""One ECG recording as every reader returns it, and the error raised for bad input."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ked.errors import UserError
from knowledge.leads import canonical_lead

MIN_FS_HZ = 50.0
"""Lowest accepted sampling rate: below it a record cannot carry the ECG content that a 100 Hz
model sees (QRS energy reaches well above 25 Hz)."""

MIN_DURATION_S = 5.0
"""Default shortest accepted record: half of the standard 10 s window; readers take a
``min_duration_s`` argument to change it."""

UNITS = ("mV", "z-score")


class ECGReadError(UserError, ValueError):
    """A record or a dataset file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True, eq=False)
class ECGRecord:
    """A multi-lead ECG with its sampling rate, canonical lead names and resolvable labels.

    ``labels`` are strings that ked's knowledge base resolves: ``"SNOMED:<code>"``,
    ``"SCP:<code>"`` or a plain diagnosis name. Construction validates the record and raises
    `ECGReadError` naming ``source`` when it is unusable: a non-2-D signal, a lead count that
    differs from ``leads``, an unknown or repeated lead name, a bad sampling rate, unknown units,
    or a signal without a single finite value. Lead names are canonicalised (``"avr"`` ->
    ``"aVR"``) and the signal is stored as C-contiguous float32. Isolated non-finite samples are
    kept: the preprocessing pipeline fills them.
    """

    record_id: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    units: str
    labels: tuple[str, ...]
    patient_id: str | None
    source: str
    dataset: str
    meta: dict[str, Any] = field(default_factory=dict)
    bandpass_hz: tuple[float, float] | None = None
    """Pass band the signal was already filtered with (e.g. ``(0.5, 40.0)``), or None."""

    def __post_init__(self) -> None:
        fail = self._fail
        signal = np.asarray(self.signal)
        if signal.ndim != 2:
            fail(f"signal must be 2-D (leads, samples), got shape {signal.shape}")
        if signal.shape[0] != len(self.leads):
            fail(f"signal has {signal.shape[0]} leads but {len(self.leads)} lead names")
        if signal.shape[1] == 0:
            fail("signal has no samples")
        try:
            leads = tuple(canonical_lead(name) for name in self.leads)
        except ValueError as exc:
            fail(str(exc))
        if len(set(leads)) != len(leads):
            fail(f"repeated lead names in {list(self.leads)}")
        fs = float(self.fs)
        if not math.isfinite(fs) or fs <= 0:
            fail(f"invalid sampling rate {self.fs!r} Hz")
        if fs < MIN_FS_HZ:
            fail(f"sampling rate {fs:g} Hz is below the minimum of {MIN_FS_HZ:g} Hz")
        if self.units not in UNITS:
            fail(f"units {self.units!r} not one of {UNITS}")
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        if not np.isfinite(signal).any():
            fail("signal has no finite value (all NaN or infinite)")
        object.__setattr__(self, "signal", signal)
        object.__setattr__(self, "leads", leads)
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "labels", tuple(self.labels))

    def _fail(self, reason: str) -> NoReturn:
        raise ECGReadError(self.source, f"record {self.record_id}: {reason}")

    @property
    def n_samples(self) -> int:
        """Number of samples per lead."""
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        """Length of the record in seconds."""
        return self.n_samples / self.fs


def require_duration(record: ECGRecord, min_duration_s: float) -> ECGRecord:
    """Return ``record`` unchanged, or raise `ECGReadError` when it is shorter than the minimum."""
    if record.duration_s < min_duration_s:
        raise ECGReadError(
            record.source,
            f"record {record.record_id} lasts {record.duration_s:.2f} s, shorter than the "
            f"minimum of {min_duration_s:g} s",
        )
    return record
