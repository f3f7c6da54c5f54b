"""CPSC 2018 (ICBEB): original ``.mat`` files (struct ``ECG``: ``data`` 12 x N in mV, 500 Hz,
``sex``, ``age``) with a ``labels.csv`` keyed by ``filename``.

Labels map to SNOMED-CT through `CPSC2018_LABELS`. Source of the table: the codes the
PhysioNet/CinC Challenge 2020/2021 organisers gave the same CPSC 2018 classes
(``dx_mapping_scored.csv`` / ``dx_mapping_unscored.csv``, column ``CPSC``), with two choices
by the label's own name: ``CLBBB``/``CRBBB`` map to the *complete* bundle branch block codes
(733534002, 713427006), which the challenge scores as equivalent to the plain LBBB/RBBB codes
(164909002, 59118001) it used; ``VPC`` maps to premature ventricular contractions (427172004),
where the challenge used ventricular ectopics (164884008). ``NORM`` (CPSC's "Normal") is sinus
rhythm (426783006), as in the challenge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoders.ecg.readers.base import (
    ECGSource,
    RecordRef,
    clean_id,
    flagged_labels,
    load_mat,
    mat_scalar,
    parse_age,
    parse_sex,
    read_table,
    row_for,
)
from encoders.ecg.record import MIN_DURATION_S, ECGReadError, ECGRecord
from knowledge.leads import STANDARD_LEADS

CPSC2018_FS = 500.0

CPSC2018_LABELS = {
    "NORM": "SNOMED:426783006",  # sinus rhythm
    "AFIB": "SNOMED:164889003",  # atrial fibrillation
    "1AVB": "SNOMED:270492004",  # 1st degree AV block
    "CLBBB": "SNOMED:733534002",  # complete left bundle branch block
    "CRBBB": "SNOMED:713427006",  # complete right bundle branch block
    "PAC": "SNOMED:284470004",  # premature atrial contraction
    "VPC": "SNOMED:427172004",  # premature ventricular contractions
    "STD": "SNOMED:429622005",  # ST depression
    "STE": "SNOMED:164931005",  # ST elevation
}


def read_cpsc2018_mat(path: Path) -> tuple[np.ndarray, dict[str, object]]:
    """The (12, N) signal in mV and the ``age``/``sex`` of one CPSC 2018 ``.mat`` file."""
    mat = load_mat(path)
    ecg = mat.get("ECG")
    if not isinstance(ecg, np.ndarray) or ecg.dtype.names is None or "data" not in ecg.dtype.names:
        raise ECGReadError(path, "no struct 'ECG' with field 'data' in MATLAB file")
    data = np.asarray(ecg["data"].reshape(-1)[0])
    if data.ndim != 2 or data.shape[0] != len(STANDARD_LEADS):
        raise ECGReadError(path, f"ECG.data must have shape (12, samples), got {data.shape}")
    if not np.issubdtype(data.dtype, np.number):
        raise ECGReadError(path, f"ECG.data is not numeric ({data.dtype})")
    fields = {
        name: mat_scalar(ecg[name].reshape(-1)[0])
        for name in ("age", "sex")
        if name in ecg.dtype.names
    }
    return data, fields


class CPSC2018Source(ECGSource):
    """A folder (searched recursively) of CPSC 2018 ``.mat`` files and its ``labels.csv``."""

    kind = "cpsc2018"
    layout = "CPSC 2018 .mat files (struct ECG: data 12xN, 500 Hz) + labels.csv keyed by filename"

    def __init__(
        self, root: str | Path, *, min_duration_s: float = MIN_DURATION_S, spec: str | None = None
    ) -> None:
        super().__init__(root, min_duration_s=min_duration_s, spec=spec)
        self.labels_path = self.root / "labels.csv"
        table = read_table(self.labels_path, ("filename",))
        table.index = table["filename"].astype(str).map(lambda name: Path(name).stem)
        self.table = table

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        labels = path / "labels.csv"
        if not labels.is_file() or next(path.rglob("*.mat"), None) is None:
            return False
        with labels.open(encoding="utf-8", errors="ignore") as file:
            return "filename" in file.readline().strip().split(",")

    def refs(self) -> list[RecordRef]:
        return [RecordRef(mat.stem, mat) for mat in sorted(self.root.rglob("*.mat"))]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return (ref.path, self.labels_path)

    def _read(self, ref: RecordRef) -> ECGRecord:
        row = row_for(self.table, ref.record_id, path=ref.path, table_path=self.labels_path)
        data, fields = read_cpsc2018_mat(ref.path)
        return ECGRecord(
            record_id=ref.record_id,
            signal=data,
            fs=CPSC2018_FS,
            leads=STANDARD_LEADS,
            units="mV",
            labels=flagged_labels(row, CPSC2018_LABELS),
            patient_id=clean_id(row.get("patient_id")),
            source=str(ref.path),
            dataset=self.kind,
            meta={"age": parse_age(fields.get("age")), "sex": parse_sex(fields.get("sex"))},
        )
