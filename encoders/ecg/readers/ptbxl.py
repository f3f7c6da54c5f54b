"""PTB-XL in its official layout (WFDB records) and as an array file plus a one-hot label table.

Labels are SCP-ECG statements, ``"SCP:<code>"`` in PTB-XL's official spelling (``SCP:NST_``),
and PTB-XL's diagnostic classes and sub-classes as the diagnoses they name
(`knowledge.vocab.ptbxl_group_queries`: ``super_class:MI`` is ``"myocardial infarction"``), so a
record of anteroseptal MI also counts for anterior MI and for myocardial infarction.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encoders.ecg.readers.base import (
    ECGSource,
    RecordRef,
    clean_id,
    flagged_labels,
    parse_age,
    read_table,
    row_for,
)
from encoders.ecg.readers.physionet import read_wfdb_signal, wfdb_files
from encoders.ecg.record import MIN_DURATION_S, ECGReadError, ECGRecord
from encoders.ecg.splits import normalize_split, ptbxl_fold_split
from knowledge.leads import STANDARD_LEADS
from knowledge.vocab import ptbxl_group_queries, ptbxl_groups_of

DATASET = "ptbxl"

# The official PTB-XL statement codes that end in an underscore (scp_statements.csv); label
# tables derived from PTB-XL often drop it (``form:NST`` for ``NST_``).
SCP_UNDERSCORE_CODES = frozenset({"ISC_", "NST_", "NT_", "STD_", "STE_", "TAB_"})

RECORD_DURATION_S = 10.0
"""Every PTB-XL record lasts 10 s; an array file's declared rate must agree with its shape."""

_STATEMENT_GROUPS = ("form", "rhythm")
_CLASS_GROUPS = ("super_class", "sub_class")
_RATE_IN_NAME = re.compile(r"_(\d+(?:\.\d+)?)hz", re.IGNORECASE)


def scp_label(code: str) -> str:
    """The label string of an SCP-ECG statement in official spelling (``"NST"`` -> ``SCP:NST_``)."""
    code = code.strip()
    if f"{code}_" in SCP_UNDERSCORE_CODES:
        code = f"{code}_"
    return f"SCP:{code}"


def _with_groups(statements: Iterable[str]) -> tuple[str, ...]:
    """Statement labels followed by the diagnoses of their classes and sub-classes, once each."""
    groups = ptbxl_group_queries()
    labels = list(statements)
    for label in list(labels):
        labels += [groups[g] for g in ptbxl_groups_of(label.removeprefix("SCP:")) if g in groups]
    return tuple(dict.fromkeys(labels))


def _ptbxl_sex(value: Any) -> str | None:
    """PTB-XL codes sex as 0 = male, 1 = female."""
    return {0: "male", 1: "female"}.get(int(value)) if pd.notna(value) else None


class PTBXLSource(ECGSource):
    """PTB-XL's official layout: ``ptbxl_database.csv`` + ``records100/`` (or ``records500/``).

    Labels are every statement of ``scp_codes`` (whatever its likelihood, as in the PTB-XL
    benchmark); the likelihoods are kept in ``meta["scp_likelihood"]``. ``meta["split"]`` follows
    the recommended folds (``strat_fold`` 1-8 train, 9 val, 10 test).
    """

    kind = "ptbxl"
    layout = "ptbxl_database.csv (scp_codes, patient_id, strat_fold, filename_lr/_hr) + records100/"
    sampling_rate = 100

    def __init__(
        self, root: str | Path, *, min_duration_s: float = MIN_DURATION_S, spec: str | None = None
    ) -> None:
        super().__init__(root, min_duration_s=min_duration_s, spec=spec)
        self.database = self.root / "ptbxl_database.csv"
        required = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
        table = read_table(self.database, required)
        table.index = pd.Index([clean_id(value) for value in table["ecg_id"]], name="record_id")
        self.table = table
        self._filename_column = "filename_lr" if self.sampling_rate == 100 else "filename_hr"

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "ptbxl_database.csv").is_file()

    def refs(self) -> list[RecordRef]:
        return [
            RecordRef(record_id=str(record_id), path=self.root / f"{filename}.hea")
            for record_id, filename in self.table[self._filename_column].items()
        ]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return (*wfdb_files(ref.path), self.database)

    def _read(self, ref: RecordRef) -> ECGRecord:
        row = row_for(self.table, ref.record_id, path=ref.path, table_path=self.database)
        try:
            scp_codes = ast.literal_eval(str(row["scp_codes"]))
            if not isinstance(scp_codes, dict):
                raise ValueError("not a dict")
        except (ValueError, SyntaxError) as exc:
            raise ECGReadError(
                self.database, f"ecg_id {ref.record_id}: bad scp_codes {row['scp_codes']!r}"
            ) from exc
        wave = read_wfdb_signal(ref.path)
        fold = int(row["strat_fold"])
        meta: dict[str, Any] = {
            "strat_fold": fold,
            "split": ptbxl_fold_split(fold),
            "scp_likelihood": {scp_label(code)[4:]: float(v) for code, v in scp_codes.items()},
            "age": parse_age(row.get("age")),
            "sex": _ptbxl_sex(row.get("sex")),
        }
        return ECGRecord(
            record_id=ref.record_id,
            signal=wave.signal,
            fs=wave.fs,
            leads=wave.leads,
            units="mV",
            labels=_with_groups(scp_label(code) for code in scp_codes),
            patient_id=clean_id(row["patient_id"]),
            source=str(ref.path),
            dataset=DATASET,
            meta=meta,
        )


class PTBXLHighRateSource(PTBXLSource):
    """PTB-XL's official layout read at 500 Hz (``filename_hr``, ``records500/``)."""

    kind = "ptbxl-hr"
    layout = "as 'ptbxl', reading the 500 Hz records500/"
    sampling_rate = 500

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return False  # a PTB-XL folder is detected as 'ptbxl'; ask for 500 Hz by name


class PTBXLArraySource(ECGSource):
    """PTB-XL as one array file of shape (N, 12, T) plus a label table with one row per record.

    The array (``signals_<fs>hz.npy``, memory-mapped; or the ``signals`` key of an ``.npz``)
    holds the standard 12 leads in standard order; the table has ``ecg_id``, ``split`` and one-hot
    columns. ``form:*`` and ``rhythm:*`` columns are SCP statements and become labels
    (``form:NST`` -> ``SCP:NST_``); ``super_class:*`` and ``sub_class:*`` columns become the
    diagnoses they name (``sub_class:CLBBB`` -> ``SCP:CLBBB``, ``super_class:CD`` ->
    ``"conduction disturbance"``) and are also kept in ``meta["super_class"]`` and
    ``meta["sub_class"]``. The sampling rate is read from the file name
    unless ``fs`` is given; it must agree with the array's length (PTB-XL records last 10 s).
    By default the signals are taken as already band-pass filtered (0.5-40 Hz) and z-scored, as
    in ``ptbxl_sample/``.
    """

    kind = "ptbxl-array"
    layout = "signals_<fs>hz.npy (N, 12, T) + labels.csv (ecg_id, split, form:*/rhythm:* one-hot)"

    def __init__(
        self,
        root: str | Path,
        *,
        signals: str | Path | None = None,
        labels: str | Path | None = None,
        fs: float | None = None,
        units: str = "z-score",
        bandpass_hz: tuple[float, float] | None = (0.5, 40.0),
        min_duration_s: float = MIN_DURATION_S,
        spec: str | None = None,
    ) -> None:
        super().__init__(root, min_duration_s=min_duration_s, spec=spec)
        self.signals_path = (
            Path(signals).absolute() if signals is not None else self._find_signals()
        )
        self.labels_path = (
            Path(labels).absolute() if labels is not None else self.root / "labels.csv"
        )
        self.fs = self._declared_rate(fs)
        self.units = units
        self.bandpass_hz = bandpass_hz
        self.table = read_table(self.labels_path, ("ecg_id",))
        groups = ptbxl_group_queries()
        self.statement_columns = {
            column: scp_label(name) if group in _STATEMENT_GROUPS else groups[class_key]
            for column in self.table.columns
            for group, _, name in [column.partition(":")]
            for class_key in [f"{group}:{name.strip('_')}"]
            if group in _STATEMENT_GROUPS or class_key in groups
        }
        """The table's label columns and their labels (``form:NST`` -> ``SCP:NST_``)."""
        array = self._load()
        self._check_shape(array)
        self._array: np.ndarray | None = array

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "labels.csv").is_file() and next(
            path.glob("signals_*hz.npy"), None
        ) is not None

    def _find_signals(self) -> Path:
        found = sorted(self.root.glob("signals_*hz.npy"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise ECGReadError(self.root, f"{what} signals_<fs>hz.npy files; pass signals=")
        return found[0]

    def _declared_rate(self, fs: float | None) -> float:
        match = _RATE_IN_NAME.search(self.signals_path.name)
        named = float(match.group(1)) if match else None
        if fs is None and named is None:
            raise ECGReadError(self.signals_path, "sampling rate not in the file name; pass fs=")
        if fs is not None and named is not None and float(fs) != named:
            raise ECGReadError(
                self.signals_path, f"fs={fs:g} Hz contradicts the file name's {named:g} Hz"
            )
        rate = float(fs if fs is not None else named)  # type: ignore[arg-type]
        if not np.isfinite(rate) or rate <= 0:
            raise ECGReadError(self.signals_path, f"invalid sampling rate {rate!r} Hz")
        return rate

    def _load(self) -> np.ndarray:
        path = self.signals_path
        if not path.is_file():
            raise ECGReadError(path, "signal array not found")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    return archive["signals"]
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # numpy raises OSError, ValueError, KeyError, zipfile errors
            raise ECGReadError(path, f"unreadable array ({type(exc).__name__}: {exc})") from exc

    def _check_shape(self, array: np.ndarray) -> None:
        path = self.signals_path
        if array.ndim != 3 or array.shape[1] != len(STANDARD_LEADS):
            raise ECGReadError(path, f"expected shape (N, 12, samples), got {array.shape}")
        expected = round(self.fs * RECORD_DURATION_S)
        if array.shape[2] != expected:
            raise ECGReadError(
                path,
                f"declared rate {self.fs:g} Hz contradicts {array.shape[2]} samples per record "
                f"(PTB-XL records last {RECORD_DURATION_S:g} s: expected {expected})",
            )
        if array.shape[0] != len(self.table):
            raise ECGReadError(
                path, f"{array.shape[0]} signals but {len(self.table)} rows in {self.labels_path}"
            )

    @property
    def signals(self) -> np.ndarray:
        """The (N, 12, T) array, loaded (memory-mapped for ``.npy``) on first use."""
        if self._array is None:
            self._array = self._load()
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes re-open the file instead of receiving a copy of the array.
        return {**self.__dict__, "_array": None}

    def refs(self) -> list[RecordRef]:
        return [
            RecordRef(record_id=str(clean_id(ecg_id)), path=self.signals_path, index=index)
            for index, ecg_id in enumerate(self.table["ecg_id"])
        ]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return (self.signals_path, self.labels_path)

    def _read(self, ref: RecordRef) -> ECGRecord:
        if ref.index is None or not 0 <= ref.index < len(self.table):
            raise ECGReadError(self.signals_path, f"record {ref.record_id}: no row {ref.index}")
        row = self.table.iloc[ref.index]
        if clean_id(row["ecg_id"]) != ref.record_id:
            raise ECGReadError(
                self.labels_path, f"row {ref.index} is ecg_id {row['ecg_id']}, not {ref.record_id}"
            )
        meta: dict[str, Any] = {"index": ref.index}
        if "split" in row and pd.notna(row["split"]):
            meta["split"] = normalize_split(row["split"])
        for group in _CLASS_GROUPS:
            meta[group] = tuple(
                column.partition(":")[2]
                for column in self.table.columns
                if column.startswith(f"{group}:") and bool(row[column])
            )
        return ECGRecord(
            record_id=ref.record_id,
            signal=self.signals[ref.index],
            fs=self.fs,
            leads=STANDARD_LEADS,
            units=self.units,
            labels=flagged_labels(row, self.statement_columns),
            patient_id=None,
            source=str(self.signals_path),
            dataset=DATASET,
            meta=meta,
            bandpass_hz=self.bandpass_hz,
        )
