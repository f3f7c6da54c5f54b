"""What every dataset source shares: record references, the report-and-skip scan, file helpers."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.io

from encoders.ecg.record import MIN_DURATION_S, ECGReadError, ECGRecord, require_duration

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordRef:
    """Where one record of a source lives: its file and, for array files, its row."""

    record_id: str
    path: Path
    index: int | None = None


@dataclass(frozen=True)
class SkippedRecord:
    """A record that a scan reported and skipped, with the reason."""

    record_id: str
    path: str
    reason: str


class ECGSource(ABC):
    """A dataset on disk in one known layout: lists its records and reads them one by one.

    ``spec`` is the string that reopens the same source (``"<kind>:<root>"``, see
    `encoders.ecg.sources.open_source`); it is stored in manifests.
    """

    kind: ClassVar[str]
    layout: ClassVar[str]
    """One line describing the on-disk layout, shown when a folder's format is not recognised."""

    def __init__(
        self, root: str | Path, *, min_duration_s: float = MIN_DURATION_S, spec: str | None = None
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        if not self.root.exists():
            raise ECGReadError(self.root, f"{self.kind} source not found")
        self.min_duration_s = min_duration_s
        self.spec = spec or f"{self.kind}:{self.root}"

    @classmethod
    @abstractmethod
    def looks_like(cls, path: Path) -> bool:
        """Whether ``path`` holds a dataset in this source's layout (used to detect formats)."""

    @abstractmethod
    def refs(self) -> list[RecordRef]:
        """All records of the source, in a stable order."""

    @abstractmethod
    def _read(self, ref: RecordRef) -> ECGRecord:
        """Read one record; raise `ECGReadError` when it is unusable."""

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        """The files a record is read from (those that may not exist included): when any of
        them changes, appears or vanishes, a manifest reads the record again."""
        return (ref.path,)

    def read(self, ref: RecordRef) -> ECGRecord:
        """Read one record, rejecting it when shorter than ``min_duration_s``."""
        return require_duration(self._read(ref), self.min_duration_s)

    def attempt(self, ref: RecordRef) -> ECGRecord | ECGReadError:
        """What reading one record gives: the record, or the error (logged as a warning)."""
        try:
            return self.read(ref)
        except ECGReadError as exc:
            logger.warning("skipping record %s: %s", ref.record_id, exc)
            return exc

    def attempts(self) -> Iterator[tuple[RecordRef, ECGRecord | ECGReadError]]:
        """Each record with what reading it gave (see `attempt`)."""
        for ref in self.refs():
            yield ref, self.attempt(ref)

    def iter_records(self, skipped: list[SkippedRecord] | None = None) -> Iterator[ECGRecord]:
        """Yield every readable record; bad ones are logged, skipped and appended to ``skipped``."""
        for ref, result in self.attempts():
            if isinstance(result, ECGRecord):
                yield result
            elif skipped is not None:
                skipped.append(SkippedRecord(ref.record_id, result.path, result.reason))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def load_mat(path: Path) -> dict[str, Any]:
    """Load a MATLAB file, turning a missing, truncated or unsupported file into `ECGReadError`."""
    if not path.is_file():
        raise ECGReadError(path, "file not found")
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise ECGReadError(path, f"unsupported MATLAB file version: {exc}") from exc
    except Exception as exc:  # scipy raises many types for corrupt files
        raise ECGReadError(path, f"unreadable MATLAB file ({type(exc).__name__}: {exc})") from exc


def mat_array(mat: Mapping[str, Any], key: str, path: Path) -> np.ndarray:
    """The numeric array stored under ``key`` in a loaded MATLAB file."""
    if key not in mat:
        raise ECGReadError(path, f"no variable {key!r} in MATLAB file (found {sorted(mat)})")
    value = np.asarray(mat[key])
    if not np.issubdtype(value.dtype, np.number):
        raise ECGReadError(path, f"variable {key!r} is not numeric ({value.dtype})")
    return value


def mat_scalar(value: Any) -> Any:
    """The single value wrapped in MATLAB's nested arrays (``[[52]]`` -> 52, ``['Male']``)."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            return None if value.size == 0 else value
        value = value.reshape(-1)[0]
    return value.item() if isinstance(value, np.generic) else value


def read_table(path: Path, required: tuple[str, ...], **kwargs: Any) -> pd.DataFrame:
    """Read a CSV or Excel label table, checking that the required columns are present."""
    if not path.is_file():
        raise ECGReadError(path, "label table not found")
    try:
        if path.suffix.lower() in {".xlsx", ".xls"}:
            table = pd.read_excel(path, **kwargs)
        else:
            table = pd.read_csv(path, **kwargs)
    except Exception as exc:  # pandas raises parser, IO and encoding errors
        raise ECGReadError(path, f"unreadable table ({type(exc).__name__}: {exc})") from exc
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ECGReadError(path, f"missing columns {missing}")
    return table


def row_for(table: pd.DataFrame, key: str, *, path: Path, table_path: Path) -> pd.Series:
    """The row of a table indexed by record key, or `ECGReadError` naming both files."""
    if key not in table.index:
        raise ECGReadError(path, f"no row for {key!r} in {table_path}")
    row = table.loc[key]
    if isinstance(row, pd.DataFrame):
        raise ECGReadError(path, f"{len(row)} rows for {key!r} in {table_path}")
    return row


def flagged_labels(row: pd.Series, table: Mapping[str, str]) -> tuple[str, ...]:
    """Label strings of the one-hot columns of ``row`` that are set, mapped through ``table``."""
    flagged = (label for column, label in table.items() if column in row and _truthy(row[column]))
    return tuple(dict.fromkeys(flagged))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def parse_sex(value: Any) -> str | None:
    """``"male"``/``"female"`` from the spellings the datasets use, else None."""
    text = str(mat_scalar(value)).strip().lower()
    if text in {"male", "m", "1", "true"}:
        return "male"
    if text in {"female", "f", "0", "false"}:
        return "female"
    return None


def parse_age(value: Any) -> float | None:
    """Age in years, or None for missing values (``NaN``, ``Unknown``, empty)."""
    try:
        age = float(mat_scalar(value))
    except (TypeError, ValueError):
        return None
    return age if math.isfinite(age) and age >= 0 else None


def clean_id(value: Any) -> str | None:
    """A patient or record id as text (``15709.0`` -> ``"15709"``); None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None
