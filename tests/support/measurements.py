"""Measurements for criteria tests, without a recording."""

from __future__ import annotations

from typing import Any

from encoders.ecg.rhythm import RhythmMeasurement


def sinus_beat(**changes: Any) -> RhythmMeasurement:
    """A steady sinus beat at 70 bpm (QRS 90 ms, PR 160 ms, no premature beats), with
    ``changes``; everything else unmeasured."""
    fields: dict[str, Any] = {
        "rate_bpm": 70.0,
        "rr_irregularity": 0.02,
        "beats": 9,
        "premature_beats": 0.0,
        "qrs_ms": 90.0,
        "pr_ms": 160.0,
    }
    return RhythmMeasurement(**(fields | changes))
