"""WFDB records (via the wfdb package) and PhysioNet/CinC Challenge 2020/2021 record folders.

A CinC header carries the diagnoses as SNOMED-CT codes in a ``#Dx:`` comment, plus ``#Age:`` and
``#Sex:``; every code becomes the label ``"SNOMED:<code>"``. Georgia headers (``E*``) originally
named the record ``E00271.mat`` on their first line, which wfdb rejects; such a header is
corrected in a temporary copy before reading.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
from wfdb.io.header import HeaderSyntaxError

from encoders.ecg.readers.base import ECGSource, RecordRef, parse_age, parse_sex
from encoders.ecg.record import ECGReadError, ECGRecord

# Factor from a WFDB physical unit (lower-cased) to millivolts.
_TO_MILLIVOLT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}

# First letters of CinC 2021 record names -> the database the record comes from.
CINC_ORIGINS = {
    "A": "CPSC 2018",
    "Q": "CPSC 2018 extra",
    "I": "St Petersburg INCART",
    "S": "PTB",
    "HR": "PTB-XL",
    "E": "Georgia",
    "JS": "Chapman-Shaoxing and Ningbo",
}

_ORIGIN_PREFIX = re.compile(r"^([A-Za-z]+)\d")


@dataclass(frozen=True)
class WFDBSignal:
    """The physical signal of a WFDB record in millivolts, with its header fields."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    comments: tuple[str, ...]


def read_wfdb_signal(path: str | Path) -> WFDBSignal:
    """Read a WFDB record given its ``.hea`` file (or the record path without extension).

    The signal is returned as (leads, samples) in millivolts; units other than mV, uV and V
    raise `ECGReadError`.
    """
    header = Path(path).with_suffix(".hea")
    if not header.is_file():
        raise ECGReadError(header, "WFDB header not found")
    _check_declared_rate(header)
    record = _rdrecord(header)
    if record.p_signal is None or record.sig_name is None:
        raise ECGReadError(header, "WFDB record has no signals")
    scale = []
    for lead, unit in zip(record.sig_name, record.units or [], strict=False):
        factor = _TO_MILLIVOLT.get(str(unit).strip().lower())
        if factor is None:
            raise ECGReadError(header, f"lead {lead}: unsupported unit {unit!r} (expected mV)")
        scale.append(factor)
    if len(scale) != len(record.sig_name):
        raise ECGReadError(header, "WFDB header lacks units for some signals")
    signal = np.asarray(record.p_signal, dtype=np.float64).T * np.asarray(scale)[:, None]
    return WFDBSignal(
        signal=signal,
        fs=float(record.fs),
        leads=tuple(record.sig_name),
        comments=tuple(record.comments or ()),
    )


def _check_declared_rate(header: Path) -> None:
    """Refuse a record line whose sampling-rate field is not a positive number.

    wfdb reads an unparsable rate (``abc``, ``-500``) as its default of 250 Hz; an absent field
    is WFDB's documented default and stays allowed. The field may carry a counter frequency
    (``360/1000(0)``).
    """
    text = header.read_text(encoding="ascii", errors="ignore")
    lines = [line.split() for line in text.splitlines() if line.strip()]
    record_line = next((f for f in lines if not f[0].startswith("#")), [])
    if len(record_line) < 3:
        return
    declared = record_line[2]
    try:
        rate = float(declared.split("/")[0])
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise ECGReadError(
            header,
            f"sampling rate {declared!r} on the header's record line is not a positive "
            "number of Hz",
        )


def wfdb_files(header: Path) -> tuple[Path, ...]:
    """A WFDB record's header and the signal files it usually names (``.mat``, ``.dat``)."""
    return (header, header.with_suffix(".mat"), header.with_suffix(".dat"))


def _rdrecord(header: Path) -> wfdb.Record:
    try:
        return wfdb.rdrecord(str(header.with_suffix("")), physical=True)
    except HeaderSyntaxError as exc:
        fixed = _fix_record_line(header)
        if fixed is None:
            raise ECGReadError(header, f"unreadable WFDB header: {exc}") from exc
        return _rdrecord_fixed(header, fixed)
    except Exception as exc:  # wfdb raises many types for corrupt headers and signal files
        raise ECGReadError(header, f"unreadable WFDB record ({type(exc).__name__}: {exc})") from exc


def _fix_record_line(header: Path) -> str | None:
    """The header text with a record name like ``E00271.mat`` cut to ``E00271``, or None."""
    lines = header.read_text(encoding="ascii", errors="ignore").splitlines()
    for number, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.strip().partition(" ")
        if Path(name).suffix and Path(name).stem == header.stem:
            lines[number] = f"{header.stem} {rest}"
            return "\n".join(lines) + "\n"
        return None
    return None


def _rdrecord_fixed(header: Path, text: str) -> wfdb.Record:
    """Read a record whose header needed correcting, through a corrected copy next to links."""
    with tempfile.TemporaryDirectory(prefix="ked-wfdb-") as tmp:
        folder = Path(tmp)
        (folder / header.name).write_text(text, encoding="ascii")
        for signal_file in {line.split()[0] for line in text.splitlines()[1:] if line.strip()}:
            if not signal_file.startswith("#") and (header.parent / signal_file).is_file():
                (folder / signal_file).symlink_to((header.parent / signal_file).resolve())
        try:
            return wfdb.rdrecord(str(folder / header.stem), physical=True)
        except Exception as exc:  # as in _rdrecord
            raise ECGReadError(
                header, f"unreadable WFDB record ({type(exc).__name__}: {exc})"
            ) from exc


def parse_cinc_comments(comments: tuple[str, ...]) -> dict[str, str]:
    """Header comments ``#Key: value`` (any spacing, any key case) as a lower-cased-key dict."""
    fields: dict[str, str] = {}
    for comment in comments:
        key, sep, value = comment.lstrip("#").partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def cinc_labels(dx: str) -> tuple[str, ...]:
    """``"164889003,59118001"`` -> ``("SNOMED:164889003", "SNOMED:59118001")``.

    Entries that are not SNOMED-CT codes are kept as plain names.
    """
    codes = [code.strip() for code in dx.split(",") if code.strip()]
    return tuple(f"SNOMED:{code}" if code.isdigit() else code for code in codes)


def cinc_origin(record_id: str) -> str | None:
    """The database a CinC 2021 record comes from, from its name prefix (``HR00001`` -> PTB-XL)."""
    match = _ORIGIN_PREFIX.match(record_id)
    return CINC_ORIGINS.get(match.group(1).upper()) if match else None


def read_cinc_record(path: str | Path, *, dataset: str = "cinc2021") -> ECGRecord:
    """Read one PhysioNet/CinC Challenge record (``.hea`` + signal file) with its ``#Dx`` labels."""
    header = Path(path).with_suffix(".hea")
    wave = read_wfdb_signal(header)
    fields = parse_cinc_comments(wave.comments)
    meta: dict[str, Any] = {
        "age": parse_age(fields.get("age")),
        "sex": parse_sex(fields.get("sex")),
        "origin": cinc_origin(header.stem),
    }
    return ECGRecord(
        record_id=header.stem,
        signal=wave.signal,
        fs=wave.fs,
        leads=wave.leads,
        units="mV",
        labels=cinc_labels(fields.get("dx", "")),
        patient_id=None,
        source=str(header),
        dataset=dataset,
        meta=meta,
    )


class CinCSource(ECGSource):
    """A folder (searched recursively) of PhysioNet/CinC Challenge WFDB records.

    Plain WFDB records without ``#Dx`` comments are read too, with no labels. CinC 2021 has no
    patient ids, so splits of this source are record-level.
    """

    kind = "cinc2021"
    layout = "WFDB .hea + .mat/.dat records, CinC '#Dx:' SNOMED codes in the headers"

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return path.is_dir() and next(path.rglob("*.hea"), None) is not None

    def refs(self) -> list[RecordRef]:
        headers = [self.root] if self.root.is_file() else sorted(self.root.rglob("*.hea"))
        return [RecordRef(record_id=header.stem, path=header) for header in headers]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return wfdb_files(ref.path)

    def _read(self, ref: RecordRef) -> ECGRecord:
        return read_cinc_record(ref.path, dataset=self.kind)
