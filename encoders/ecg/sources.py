"""Dataset specs: ``"<kind>:<path>"``, a bare path whose format is detected, or ``"sample"``.

``"sample"`` is the small PTB-XL sample shipped in ``ked/sample_data/`` (400 records, see its
README); `sample_data_dir` also holds two CinC 2021 WFDB records (``cinc2021/``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from encoders.ecg.readers import (
    ChapmanSource,
    CinCSource,
    CODE15Source,
    CPSC2018Source,
    ECGSource,
    MIMICIVECGSource,
    PTBXLArraySource,
    PTBXLHighRateSource,
    PTBXLSource,
)
from encoders.ecg.record import MIN_DURATION_S, ECGReadError

SAMPLE_SPEC = "sample"

SOURCE_TYPES: dict[str, type[ECGSource]] = {
    cls.kind: cls
    for cls in (
        CinCSource,
        PTBXLArraySource,
        PTBXLSource,
        PTBXLHighRateSource,
        CPSC2018Source,
        ChapmanSource,
        CODE15Source,
        MIMICIVECGSource,
    )
}
"""Source classes by spec prefix."""

# Most specific layouts first: a CPSC folder also holds .mat files, a PTB-XL folder WFDB records.
_DETECTION_ORDER: tuple[type[ECGSource], ...] = (
    MIMICIVECGSource,
    PTBXLSource,
    PTBXLArraySource,
    ChapmanSource,
    CODE15Source,
    CPSC2018Source,
    CinCSource,
)


def sample_data_dir() -> Path:
    """The folder of the sample data shipped inside the ``ked`` package."""
    return Path(str(resources.files("ked") / "sample_data"))


def sample_source(*, min_duration_s: float = MIN_DURATION_S) -> PTBXLArraySource:
    """The shipped 400-record PTB-XL sample (100 Hz, z-scored, 0.5-40 Hz filtered)."""
    folder = sample_data_dir()
    return PTBXLArraySource(
        folder,
        signals=folder / "ptbxl_400.npz",
        labels=folder / "ptbxl_400_labels.csv",
        fs=100.0,
        min_duration_s=min_duration_s,
        spec=SAMPLE_SPEC,
    )


def detect_format(path: str | Path) -> type[ECGSource]:
    """The source class whose layout ``path`` holds; `ECGReadError` listing the formats if none."""
    path = Path(path)
    if not path.exists():
        raise ECGReadError(path, "dataset path not found")
    for cls in _DETECTION_ORDER:
        if cls.looks_like(path):
            return cls
    formats = "; ".join(f"{kind}: {cls.layout}" for kind, cls in SOURCE_TYPES.items())
    raise ECGReadError(
        path, f"unrecognised dataset layout; name one as '<kind>:<path>' with kind in: {formats}"
    )


def open_source(spec: str | Path, *, min_duration_s: float = MIN_DURATION_S) -> ECGSource:
    """Open a dataset from ``"<kind>:<path>"``, a bare path (format detected), or ``"sample"``."""
    text = str(spec)
    if text == SAMPLE_SPEC:
        return sample_source(min_duration_s=min_duration_s)
    kind, sep, rest = text.partition(":")
    if sep and kind in SOURCE_TYPES:
        return SOURCE_TYPES[kind](rest, min_duration_s=min_duration_s)
    path = Path(text)
    if sep and kind.isidentifier() and not path.exists():
        raise ValueError(
            f"unknown dataset kind {kind!r} in {text!r}; known kinds: "
            f"{', '.join(SOURCE_TYPES)}, or {SAMPLE_SPEC!r}, or a dataset folder"
        )
    return detect_format(path)(path, min_duration_s=min_duration_s)
