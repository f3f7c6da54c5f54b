"""A Parquet manifest of a dataset, scanned once: one row per record, readable or not.

Columns: ``record_id``, ``source`` (the file holding the record), ``index`` (row in an array
file, else null), ``spec`` (the dataset spec that reopens the source), ``dataset``, ``fs``,
``n_samples``, ``leads``, ``labels``, ``patient_id``, ``split`` (when the dataset defines one),
``ok`` and ``error`` (why an unreadable record was skipped). Re-opening a saved manifest reads
only the Parquet file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from encoders.ecg.readers.base import ECGSource, RecordRef
from encoders.ecg.record import ECGReadError, ECGRecord
from encoders.ecg.sources import open_source
from encoders.ecg.splits import assign_splits

logger = logging.getLogger(__name__)

COLUMNS = (
    "record_id",
    "source",
    "index",
    "spec",
    "dataset",
    "fs",
    "n_samples",
    "leads",
    "labels",
    "patient_id",
    "split",
    "ok",
    "error",
)

_NUMERIC_DTYPES = {"index": "Int64", "fs": "float64", "n_samples": "Int64", "ok": "bool"}
_TEXT_COLUMNS = ("record_id", "source", "spec", "dataset", "patient_id", "split", "error")


@dataclass
class Manifest:
    """The records of one or more sources, as a table (see the module docstring for columns)."""

    table: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [column for column in COLUMNS if column not in self.table.columns]
        if missing:
            raise ValueError(f"manifest table lacks columns {missing}")
        # The same dtypes whether scanned or loaded: nullable ints, text as str-or-None objects.
        table = self.table.astype(_NUMERIC_DTYPES)
        for column in _TEXT_COLUMNS:
            values = table[column].astype(object)
            table[column] = values.where(values.notna(), None)
        self.table = table

    @classmethod
    def scan(cls, source: ECGSource | str) -> Manifest:
        """Read every record of a source (or dataset spec) once, keeping failures as rows."""
        source = open_source(source) if isinstance(source, str) else source
        rows = []
        for ref, result in source.attempts():
            if isinstance(result, ECGReadError):
                rows.append(_row(source, ref, None, error=str(result)))
            else:
                rows.append(_row(source, ref, result))
        manifest = cls(pd.DataFrame(rows, columns=list(COLUMNS)))
        bad = int((~manifest.table["ok"]).sum())
        logger.info("scanned %s: %d records, %d unreadable", source.spec, len(rows), bad)
        return manifest

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Open a manifest written by `save` (no rescanning)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest {path} not found")
        table = pd.read_parquet(path)
        for column in ("leads", "labels"):
            table[column] = table[column].map(tuple)
        return cls(table)

    @classmethod
    def open(cls, spec: str, path: str | Path) -> Manifest:
        """Load the manifest at ``path`` if it exists, else scan ``spec`` and save it there."""
        if Path(path).is_file():
            return cls.load(path)
        manifest = cls.scan(spec)
        manifest.save(path)
        return manifest

    @classmethod
    def concat(cls, manifests: Sequence[Manifest]) -> Manifest:
        """One manifest over several sources."""
        return cls(pd.concat([m.table for m in manifests], ignore_index=True))

    def save(self, path: str | Path) -> Path:
        """Write the manifest as Parquet; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.table.copy()
        for column in ("leads", "labels"):
            table[column] = table[column].map(list)
        table.to_parquet(path, index=False)
        return path

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ok(self) -> Manifest:
        """Only the readable records."""
        return Manifest(self.table[self.table["ok"]].reset_index(drop=True))

    @property
    def errors(self) -> pd.DataFrame:
        """``record_id``, ``source`` and ``error`` of the unreadable records."""
        return self.table.loc[~self.table["ok"], ["record_id", "source", "error"]]

    def with_splits(
        self, *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
    ) -> Manifest:
        """Fill ``split`` per dataset: the dataset's own split where known, else seeded and
        patient-level (record-level where patient ids are missing); see `splits.assign_splits`."""
        table = self.table.copy()
        for _, group in table.groupby(["spec"], sort=True):
            table.loc[group.index, "split"] = assign_splits(
                list(group["record_id"]),
                [None if pd.isna(p) else str(p) for p in group["patient_id"]],
                [None if pd.isna(s) else str(s) for s in group["split"]],
                fractions=fractions,
                seed=seed,
            )
        return Manifest(table)

    def split(self, name: str) -> Manifest:
        """Only the records of one split (``train``/``val``/``test``)."""
        return Manifest(self.table[self.table["split"] == name].reset_index(drop=True))

    def ref(self, position: int) -> tuple[str, RecordRef]:
        """The source spec and record reference of the row at ``position``."""
        row = self.table.iloc[position]
        index = None if pd.isna(row["index"]) else int(row["index"])
        return str(row["spec"]), RecordRef(str(row["record_id"]), Path(row["source"]), index)


def _row(
    source: ECGSource, ref: RecordRef, record: ECGRecord | None, error: str | None = None
) -> dict[str, object]:
    return {
        "record_id": ref.record_id,
        "source": str(ref.path),
        "index": ref.index,
        "spec": source.spec,
        "dataset": record.dataset if record else source.kind,
        "fs": record.fs if record else None,
        "n_samples": record.n_samples if record else None,
        "leads": record.leads if record else (),
        "labels": record.labels if record else (),
        "patient_id": record.patient_id if record else None,
        "split": record.meta.get("split") if record else None,
        "ok": record is not None,
        "error": error,
    }
