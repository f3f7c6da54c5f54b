"""Writing a label matrix to .npy, .safetensors, .pt or .parquet, with a JSON sidecar."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.numpy import save_file

from encoders.text.labels import LabelMatrix

FORMATS = (".npy", ".safetensors", ".pt", ".parquet")


def sidecar_path(out: Path) -> Path:
    """``labels.npy`` -> ``labels.npy.json``."""
    return out.with_name(out.name + ".json")


def _npy(matrix: LabelMatrix, path: Path) -> None:
    with path.open("wb") as fh:
        np.save(fh, matrix.vectors)


def _safetensors(matrix: LabelMatrix, path: Path) -> None:
    meta = {"sidecar": json.dumps(matrix.sidecar(), sort_keys=True)}
    save_file({"label_vectors": np.ascontiguousarray(matrix.vectors)}, str(path), metadata=meta)


def _pt(matrix: LabelMatrix, path: Path) -> None:
    torch.save({"label_vectors": matrix.tensor(), **matrix.sidecar()}, path)


def _parquet(matrix: LabelMatrix, path: Path) -> None:
    sidecar = matrix.sidecar()
    table = pa.table(
        {
            "label": sidecar["labels"],
            "code": sidecar["codes"],
            "diagnosis_id": pa.array(sidecar["diagnosis_ids"], type=pa.int64()),
            "diagnosis": sidecar["diagnoses"],
            "vector": pa.array(list(matrix.vectors), type=pa.list_(pa.float32(), matrix.dim)),
        }
    )
    meta = {b"ked": json.dumps(sidecar, sort_keys=True).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


_WRITERS: dict[str, Callable[[LabelMatrix, Path], None]] = {
    ".npy": _npy,
    ".safetensors": _safetensors,
    ".pt": _pt,
    ".parquet": _parquet,
}


def write_label_matrix(matrix: LabelMatrix, out: Path) -> Path:
    """Write the matrix (format by extension) and its sidecar atomically; return the sidecar."""
    writer = _WRITERS.get(out.suffix.lower())
    if writer is None:
        raise ValueError(f"unknown export format {out.suffix!r}; use one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_path(out)
    for path, write in (
        (out, lambda p: writer(matrix, p)),
        (sidecar, lambda p: p.write_text(json.dumps(matrix.sidecar(), indent=2) + "\n")),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(tmp)
        tmp.replace(path)
    return sidecar
