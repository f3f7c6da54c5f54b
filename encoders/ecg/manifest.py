"""A Parquet manifest of a dataset: one row per record, readable or not, kept up to date.

Columns: ``record_id``, ``source`` (the file holding the record), ``index`` (row in an array
file, else null), ``spec`` (the dataset spec that reopens the source), ``dataset``, ``fs``,
``n_samples``, ``units`` (``mV`` or ``z-score``), ``leads``, ``labels``, ``patient_id``,
``sex`` (``male``/``female`` where the dataset records it), ``split`` (when the dataset defines
one), ``ok``, ``error`` (why an unreadable record was skipped), and ``files``, ``sizes`` and
``mtimes_ns``: the files the record was read from, with their size and modification time.
Re-opening a saved manifest (`Manifest.open`) lists the source's records and compares those
stamps: only records that appeared or whose files changed are read again, vanished ones are
dropped, and a record that became unreadable is kept as an error row (and logged), never
aborting the scan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    "units",
    "leads",
    "labels",
    "patient_id",
    "sex",
    "split",
    "ok",
    "error",
    "files",
    "sizes",
    "mtimes_ns",
)

_NUMERIC_DTYPES = {"index": "Int64", "fs": "float64", "n_samples": "Int64", "ok": "bool"}
_TEXT_COLUMNS = (
    "record_id",
    "source",
    "spec",
    "dataset",
    "units",
    "patient_id",
    "sex",
    "split",
    "error",
)
_LIST_COLUMNS = ("leads", "labels", "files", "sizes", "mtimes_ns")

Stamp = tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]
"""(files, sizes, mtimes_ns) of the existing files among those a record is read from."""
Key = tuple[str, str, int | None]
"""(record_id, source, index): one record of one source."""


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
        manifest, _ = cls._read(source, {})
        bad = int((~manifest.table["ok"]).sum())
        logger.info("scanned %s: %d records, %d unreadable", source.spec, len(manifest), bad)
        return manifest

    def refreshed(self, source: ECGSource) -> tuple[Manifest, int]:
        """This manifest brought up to date with ``source``, and how many records changed.

        Records whose files are unchanged keep their rows; new records and records whose
        files changed are read (an unreadable one becomes an error row); vanished ones go.
        """
        known = {_key_of(row): row for row in self.table.to_dict("records")}
        manifest, reread = Manifest._read(source, known)
        added = reread.count(None)
        changed = len(reread) - added
        vanished = len(known) - (len(manifest) - added)
        if added or changed or vanished:
            logger.info(
                "%s: %d new records, %d changed, %d vanished since the last scan",
                source.spec,
                added,
                changed,
                vanished,
            )
        return manifest, added + changed + vanished

    @classmethod
    def _read(
        cls, source: ECGSource, known: dict[Key, dict[str, Any]]
    ) -> tuple[Manifest, list[Key | None]]:
        """Rows of every record of ``source``, reusing ``known`` rows whose stamp matches;
        also the records read again (their key, or None for a new record)."""
        stats: dict[Path, os.stat_result | None] = {}
        rows, reread = [], []
        for ref in source.refs():
            stamp = _stamp(source.files(ref), stats)
            row = known.get(_key(ref))
            if row is None or _stamp_of(row) != stamp:
                reread.append(None if row is None else _key(ref))
                row = _row(source, ref, source.attempt(ref), stamp)
            rows.append(row)
        return cls(pd.DataFrame(rows, columns=list(COLUMNS))), reread

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Open a manifest written by `save` (no rescanning)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest {path} not found")
        table = pd.read_parquet(path)
        for column in _LIST_COLUMNS:
            if column in table.columns:
                table[column] = table[column].map(tuple)
        return cls(table)

    @classmethod
    def open(cls, spec: str, path: str | Path, *, rescan: bool = False) -> Manifest:
        """The manifest of ``spec`` saved at ``path``, brought up to date (`refreshed`); a full
        scan when there is none yet, when it is unreadable or from an older ked, or with
        ``rescan``. Saved again whenever something changed."""
        source = open_source(spec)
        saved = None if rescan else _load_saved(Path(path))
        if saved is None:
            manifest, changed = cls.scan(source), 1
        else:
            manifest, changed = saved.refreshed(source)
        if changed:
            manifest.save(path)
        return manifest

    @classmethod
    def concat(cls, manifests: Sequence[Manifest]) -> Manifest:
        """One manifest over several sources."""
        return cls(pd.concat([m.table for m in manifests], ignore_index=True))

    def save(self, path: str | Path) -> Path:
        """Write the manifest as Parquet (atomically); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.table.copy()
        for column in _LIST_COLUMNS:
            table[column] = table[column].map(list)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(path)
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


def _load_saved(path: Path) -> Manifest | None:
    """The manifest saved at ``path``, or None when there is none or it cannot be reused."""
    if not path.is_file():
        return None
    try:
        saved = Manifest.load(path)
    except (OSError, ValueError) as exc:  # damaged Parquet, or columns of an older ked
        logger.warning("manifest %s cannot be reused (%s); scanning the dataset again", path, exc)
        return None
    return saved


def _key(ref: RecordRef) -> Key:
    return ref.record_id, str(ref.path), ref.index


def _key_of(row: dict[str, Any]) -> Key:
    index = row["index"]
    return str(row["record_id"]), str(row["source"]), None if pd.isna(index) else int(index)


def _stamp(files: Iterable[Path], stats: dict[Path, os.stat_result | None]) -> Stamp:
    """The stamp of the existing ``files``; ``stats`` remembers each file's stat in one scan."""
    found = []
    for path in files:
        if path not in stats:
            try:
                stats[path] = path.stat()
            except OSError:
                stats[path] = None
        if (stat := stats[path]) is not None:
            found.append((str(path), int(stat.st_size), int(stat.st_mtime_ns)))
    names, sizes, mtimes = zip(*found, strict=True) if found else ((), (), ())
    return tuple(names), tuple(sizes), tuple(mtimes)


def _stamp_of(row: dict[str, Any]) -> Stamp:
    return tuple(row["files"]), tuple(map(int, row["sizes"])), tuple(map(int, row["mtimes_ns"]))


def _row(
    source: ECGSource, ref: RecordRef, result: ECGRecord | ECGReadError, stamp: Stamp
) -> dict[str, object]:
    record = result if isinstance(result, ECGRecord) else None
    error = None if record is not None else str(result)
    return {
        "record_id": ref.record_id,
        "source": str(ref.path),
        "index": ref.index,
        "spec": source.spec,
        "dataset": record.dataset if record else source.kind,
        "fs": record.fs if record else None,
        "n_samples": record.n_samples if record else None,
        "units": record.units if record else None,
        "leads": record.leads if record else (),
        "labels": record.labels if record else (),
        "patient_id": record.patient_id if record else None,
        "sex": record.meta.get("sex") if record else None,
        "split": record.meta.get("split") if record else None,
        "ok": record is not None,
        "error": error,
        "files": stamp[0],
        "sizes": stamp[1],
        "mtimes_ns": stamp[2],
    }
