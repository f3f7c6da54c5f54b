"""Measured criteria: the knowledge record's rate and regularity checked against the recording.

A text encoder places "rate above 100 bpm" and "rate below 60 bpm" close together, so text
vectors alone cannot tell sinus tachycardia from sinus bradycardia. The structured knowledge
can: its ``rhythm.rate_bpm`` range and ``rhythm.regularity`` are checked against the rate and
RR irregularity measured from the signal (`encoders.ecg.rhythm`), and the log-compatibility
is added to the model's logit. A label whose record states neither, or a recording whose beats
cannot be found, is left as the model scored it.

The margins are physiological, fixed in advance and never fitted to data: rate bounds are
soft over ``RATE_MARGIN_BPM``; "regular" means a successive-RR variation under
``REGULAR_BELOW``, "irregularly irregular" one above it, soft over ``IRREGULARITY_MARGIN``.
Other regularity statements ("irregular", "regularly irregular", "variable") cover patterns
(a single premature beat, group beating) that one irregularity number cannot judge, and are
not checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encoders.ecg.rhythm import RhythmMeasurement
from knowledge.schema import DiagnosisKnowledge

RATE_MARGIN_BPM = 5.0
REGULAR_BELOW = 0.08
IRREGULARITY_MARGIN = 0.02


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # NaN where nothing was measured; zeroed below
        return -np.logaddexp(0.0, -z)


def rhythm_log_prior(
    records: Sequence[DiagnosisKnowledge | None], measured: Sequence[RhythmMeasurement]
) -> np.ndarray:
    """(recordings, labels) log-compatibility, <= 0, of each recording with each record."""
    rate = np.array([m.rate_bpm for m in measured], dtype=np.float64)
    irregularity = np.array([m.rr_irregularity for m in measured], dtype=np.float64)
    prior = np.zeros((len(measured), len(records)))
    for column, record in enumerate(records):
        rhythm = record.rhythm if record is not None else None
        if rhythm is None:
            continue
        if rhythm.rate_bpm is not None:
            if rhythm.rate_bpm.min is not None:
                prior[:, column] += _log_sigmoid((rate - rhythm.rate_bpm.min) / RATE_MARGIN_BPM)
            if rhythm.rate_bpm.max is not None:
                prior[:, column] += _log_sigmoid((rhythm.rate_bpm.max - rate) / RATE_MARGIN_BPM)
        if rhythm.regularity == "regular":
            prior[:, column] += _log_sigmoid((REGULAR_BELOW - irregularity) / IRREGULARITY_MARGIN)
        elif rhythm.regularity == "irregularly irregular":
            prior[:, column] += _log_sigmoid((irregularity - REGULAR_BELOW) / IRREGULARITY_MARGIN)
    return np.nan_to_num(prior, nan=0.0)
