"""The ECG encoder as a general-purpose embedder: one vector per recording."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from encoders.models.ked_model import KedModel

Space = Literal["projected", "pooled"]


@torch.inference_mode()
def embed_recordings(
    model: KedModel,
    data: Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    space: Space = "projected",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(N, D) vectors: in the label space (``projected``) or the encoder's pooled features (an
    ensemble's towers: the mean of their projections, their pooled features side by side)."""
    model.eval().to(device)
    out = []
    for x, _mask, _target in DataLoader(data, batch_size=batch_size, shuffle=False):
        x = x.to(device)
        out.append((model.embed(x) if space == "projected" else model.pooled(x)).float().cpu())
    return torch.cat(out).numpy()


def write_embeddings(out: Path, record_ids: Sequence[str], vectors: np.ndarray, meta: dict) -> None:
    """``.npy`` (with a ``.json`` sidecar of record ids and settings) or ``.parquet``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, vectors)
        sidecar = {"record_ids": list(record_ids), "shape": list(vectors.shape), **meta}
        out.with_name(out.name + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    elif out.suffix == ".parquet":
        table = pa.table(
            {
                "record_id": list(record_ids),
                "vector": pa.array(list(vectors), type=pa.list_(pa.float32(), vectors.shape[1])),
            }
        )
        meta_bytes = {b"ked": json.dumps(meta).encode()}
        pq.write_table(table.replace_schema_metadata(meta_bytes), out)
    else:
        raise ValueError(f"unknown embedding format {out.suffix!r}; use .npy or .parquet")
