"""MIMIC-IV-ECG (PhysioNet) in its published layout, labelled from the machine reports.

- ``record_list.csv``: ``subject_id``, ``study_id``, ``file_name``, ``ecg_time``, ``path``; the
  path (``files/p1000/p10000032/s40689238/40689238``) names a WFDB record (``.hea`` + ``.dat``,
  500 Hz, 10 s, 12 leads) under the dataset folder.
- ``machine_measurements.csv``: one row per ``study_id`` whose ``report_0`` ... ``report_17``
  columns hold the cart's statements (blank cells are skipped).

A record's report is its diagnostic statements joined in order (``"Sinus rhythm. Left axis
deviation. Borderline ECG."``); its labels are the ``mimiciv-ked`` labels those statements name
(`knowledge.statements`). Non-diagnostic statements ("--- Pediatric criteria used ---") are left
out of both, statements naming no label are kept in the report and in ``meta["unmatched"]``.
The record id is the ``study_id``, the patient id the ``subject_id``: splits are seeded and
patient-level. A record whose files are missing or corrupt, or whose study has no row in
``machine_measurements.csv``, is named and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from encoders.ecg.readers.base import ECGSource, RecordRef, clean_id, read_table, row_for
from encoders.ecg.readers.physionet import read_wfdb_signal, wfdb_files
from encoders.ecg.record import MIN_DURATION_S, ECGReadError, ECGRecord
from knowledge.statements import StatementMatch, mimiciv_statement_mapper

DATASET = "mimic-iv-ecg"
REPORT_COLUMNS = tuple(f"report_{i}" for i in range(18))
_REPORT_COLUMN = re.compile(r"^report_\d+$")


def report_text(matches: list[StatementMatch]) -> str:
    """The report of a record: its diagnostic statements, each ending in one full stop."""
    return " ".join(f"{m.statement.rstrip(' .')}." for m in matches if m.diagnostic)


class MIMICIVECGSource(ECGSource):
    """MIMIC-IV-ECG: ``record_list.csv`` + ``machine_measurements.csv`` + ``files/p*/...``."""

    kind = "mimic-iv-ecg"
    layout = (
        "record_list.csv (subject_id, study_id, path) + machine_measurements.csv "
        "(study_id, report_0..report_17) + files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.hea/.dat"
    )

    def __init__(
        self, root: str | Path, *, min_duration_s: float = MIN_DURATION_S, spec: str | None = None
    ) -> None:
        super().__init__(root, min_duration_s=min_duration_s, spec=spec)
        self.record_list = self.root / "record_list.csv"
        self.measurements = self.root / "machine_measurements.csv"
        records = read_table(
            self.record_list, ("subject_id", "study_id", "path"), dtype={"path": str}
        )
        records.index = pd.Index([clean_id(v) for v in records["study_id"]], name="record_id")
        self.records = records
        table = read_table(
            self.measurements,
            ("study_id",),
            usecols=lambda column: column == "study_id" or bool(_REPORT_COLUMN.match(column)),
            dtype=str,
        )
        if not any(column in table.columns for column in REPORT_COLUMNS):
            raise ECGReadError(self.measurements, "no report_0 ... report_17 columns")
        table.index = pd.Index([clean_id(v) for v in table["study_id"]], name="record_id")
        self.reports_table = table
        self.mapper = mimiciv_statement_mapper()

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "record_list.csv").is_file() and (path / "files").is_dir()

    def refs(self) -> list[RecordRef]:
        return [
            RecordRef(record_id=str(record_id), path=self.root / f"{str(path).strip()}.hea")
            for record_id, path in self.records["path"].items()
        ]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return (*wfdb_files(ref.path), self.record_list, self.measurements)

    def statements(self, record_id: str, path: Path | None = None) -> list[StatementMatch]:
        """What each non-blank statement of a study's report says, in report order."""
        row = row_for(
            self.reports_table,
            record_id,
            path=path or self.measurements,
            table_path=self.measurements,
        )
        return self._matches(row[c] for c in self._report_columns)

    def reports(self) -> dict[str, str]:
        """Each listed study's report text (from the tables alone; no signal is read)."""
        table = self.reports_table[self.reports_table.index.isin(self.records.index)]
        rows = table[list(self._report_columns)].itertuples(index=True, name=None)
        return {str(key): report_text(self._matches(cells)) for key, *cells in rows}

    @property
    def _report_columns(self) -> tuple[str, ...]:
        return tuple(c for c in REPORT_COLUMNS if c in self.reports_table.columns)

    def _matches(self, cells: Iterable[object]) -> list[StatementMatch]:
        return self.mapper.match_all(cell for cell in cells if isinstance(cell, str))

    def _read(self, ref: RecordRef) -> ECGRecord:
        row = row_for(self.records, ref.record_id, path=ref.path, table_path=self.record_list)
        matches = self.statements(ref.record_id, ref.path)
        wave = read_wfdb_signal(ref.path)
        diagnostic = [m for m in matches if m.diagnostic]
        meta: dict[str, Any] = {
            "report": report_text(matches),
            "statements": tuple(m.statement for m in diagnostic),
            "unmatched": tuple(m.statement for m in diagnostic if m.unmatched),
            "ecg_time": None if pd.isna(row.get("ecg_time")) else str(row.get("ecg_time")),
        }
        return ECGRecord(
            record_id=ref.record_id,
            signal=wave.signal,
            fs=wave.fs,
            leads=wave.leads,
            units="mV",
            labels=tuple(dict.fromkeys(label for m in matches for label in m.labels)),
            patient_id=clean_id(row["subject_id"]),
            source=str(ref.path),
            dataset=DATASET,
            meta=meta,
        )
