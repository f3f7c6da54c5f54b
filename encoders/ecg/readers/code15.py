"""CODE-15% (Ribeiro et al., Nature Communications 2020) as ``.mat`` files: ``feats`` 12 x N at
``curr_sample_rate`` (400 Hz), zero-padded, plus ``meta.csv`` (``save_file``, ``idx``,
``exam_id``, ``patient_id``, ``lead_order``, ``avail_leads``) and ``labels/labels.csv``
(one-hot label columns keyed by ``idx``).

Labels map to SNOMED-CT through `CODE15_LABELS`, by the name of each CODE-15 class and the
concepts of the PhysioNet/CinC 2021 mappings (``dx_mapping_scored.csv``); ``normal_ecg`` has no
SNOMED-CT equivalent there and stays the plain name ``"normal ECG"``. Signals are taken to be in
mV (their amplitudes, QRS complexes about 1, agree). Zero padding (all-lead zero samples at
either end) is removed; leads missing from ``avail_leads`` are left out of the record, so
preprocessing masks them.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encoders.ecg.readers.base import (
    ECGSource,
    RecordRef,
    clean_id,
    flagged_labels,
    load_mat,
    mat_array,
    mat_scalar,
    parse_age,
    read_table,
    row_for,
)
from encoders.ecg.record import MIN_DURATION_S, ECGReadError, ECGRecord
from knowledge.leads import STANDARD_LEADS

CODE15_LABELS = {
    "1dAVb": "SNOMED:270492004",  # 1st degree AV block
    "RBBB": "SNOMED:59118001",  # right bundle branch block
    "LBBB": "SNOMED:164909002",  # left bundle branch block
    "SB": "SNOMED:426177001",  # sinus bradycardia
    "ST": "SNOMED:427084000",  # sinus tachycardia
    "AF": "SNOMED:164889003",  # atrial fibrillation
    "normal_ecg": "normal ECG",
}


def trim_zero_padding(signal: np.ndarray) -> np.ndarray:
    """Drop the samples at either end where every lead is exactly zero."""
    nonzero = np.flatnonzero(np.any(signal != 0, axis=0))
    if nonzero.size == 0:
        return signal[:, :0]
    return signal[:, nonzero[0] : nonzero[-1] + 1]


def _lead_list(value: Any, path: Path, column: str) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        leads = ast.literal_eval(str(value))
    except (ValueError, SyntaxError) as exc:
        raise ECGReadError(path, f"bad {column} {value!r}") from exc
    return tuple(str(lead) for lead in leads)


class CODE15Source(ECGSource):
    """A CODE-15% folder: ``meta.csv``, ``labels/labels.csv`` and ``.mat`` files (recursive)."""

    kind = "code15"
    layout = "CODE-15 .mat files ('feats' 12xN, 400 Hz) + meta.csv + labels/labels.csv"

    def __init__(
        self, root: str | Path, *, min_duration_s: float = MIN_DURATION_S, spec: str | None = None
    ) -> None:
        super().__init__(root, min_duration_s=min_duration_s, spec=spec)
        self.meta_path = self.root / "meta.csv"
        self.labels_path = self.root / "labels" / "labels.csv"
        meta = read_table(self.meta_path, ("save_file", "idx", "exam_id", "patient_id"))
        meta.index = meta["save_file"].astype(str).map(lambda name: Path(name).stem)
        self.meta = meta
        labels = read_table(self.labels_path, ("idx",))
        labels.index = labels["idx"]
        self.labels = labels

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "meta.csv").is_file() and (path / "labels" / "labels.csv").is_file()

    def refs(self) -> list[RecordRef]:
        return [RecordRef(mat.stem, mat) for mat in sorted(self.root.rglob("*.mat"))]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return (ref.path, self.meta_path, self.labels_path)

    def _read(self, ref: RecordRef) -> ECGRecord:
        row = row_for(self.meta, ref.record_id, path=ref.path, table_path=self.meta_path)
        if row["idx"] not in self.labels.index:
            raise ECGReadError(ref.path, f"no row for idx {row['idx']} in {self.labels_path}")
        label_row = self.labels.loc[row["idx"]]
        mat = load_mat(ref.path)
        feats = mat_array(mat, "feats", ref.path)
        fs = mat_scalar(mat_array(mat, "curr_sample_rate", ref.path))
        if feats.ndim != 2 or feats.shape[0] != len(STANDARD_LEADS):
            raise ECGReadError(
                ref.path, f"'feats' must have shape (12, samples), got {feats.shape}"
            )
        order = _lead_list(row.get("lead_order"), self.meta_path, "lead_order") or STANDARD_LEADS
        if len(order) != feats.shape[0]:
            raise ECGReadError(ref.path, f"lead_order names {len(order)} leads for 12 signals")
        available = _lead_list(row.get("avail_leads"), self.meta_path, "avail_leads") or order
        keep = [i for i, lead in enumerate(order) if lead in set(available)]
        signal = trim_zero_padding(feats.astype(np.float64))[keep]
        return ECGRecord(
            record_id=ref.record_id,
            signal=signal,
            fs=float(fs) if fs is not None else float("nan"),
            leads=tuple(order[i] for i in keep),
            units="mV",
            labels=flagged_labels(label_row, CODE15_LABELS),
            patient_id=clean_id(row["patient_id"]),
            source=str(ref.path),
            dataset=self.kind,
            meta={
                "age": parse_age(row.get("age")),
                "sex": _code15_sex(row.get("is_male")),
                "exam_id": clean_id(row["exam_id"]),
            },
        )


def _code15_sex(is_male: Any) -> str | None:
    if is_male is None or (isinstance(is_male, float) and pd.isna(is_male)):
        return None
    return "male" if str(is_male).strip().lower() in {"true", "1"} else "female"
