"""Shards of an embedding job: vectors embedded by a worker, committed to the cache later.

A shard is one safetensors file: the float32 ``vectors`` tensor and, in the file's metadata,
the format, the encoder's fingerprint and description, and the texts (JSON). Reading one parses
a JSON header and copies an array; nothing in it is code, so a crafted file can at worst be
refused. The texts and vectors are checked against each other and the fingerprint against the
ingesting encoder before anything is stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from encoders.text.embed import Embedder
from ked.errors import UserError, one_line

FORMAT = "ked-embedding-shard/1"
SUFFIX = ".safetensors"


class ShardError(UserError, ValueError):
    """A file that is not a readable shard, or a shard made by another encoder."""


@dataclass(frozen=True)
class Shard:
    texts: list[str]
    vectors: np.ndarray
    fingerprint: str
    encoder: dict[str, Any]


def embed_shard(embedder: Embedder, texts: Sequence[str], index: int, count: int) -> Shard:
    """Embed part ``index`` of ``count`` of the texts missing from the cache (no commit)."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    mine = embedder.missing(texts)[index::count]
    vectors = (
        embedder.encoder().encode(mine, embedder.batch_size)
        if mine
        else np.zeros((0, embedder.dim or 0), np.float32)
    )
    return Shard(mine, vectors, embedder.fingerprint, embedder.description)


def write_shard(path: Path, shard: Shard) -> None:
    """Write ``shard`` to ``path`` (a ``.safetensors`` file) atomically."""
    if path.suffix != SUFFIX:
        raise ShardError(f"{path}: shard files are {SUFFIX} files")
    metadata = {
        "format": FORMAT,
        "fingerprint": shard.fingerprint,
        "encoder": json.dumps(shard.encoder, sort_keys=True),
        "texts": json.dumps(shard.texts, ensure_ascii=False),
    }
    vectors = np.ascontiguousarray(shard.vectors, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"vectors": vectors}, str(tmp), metadata=metadata)
    tmp.replace(path)


def read_shard(path: Path) -> Shard:
    """The shard in ``path``; `ShardError` naming the file when it is not a valid one."""
    if not path.is_file():
        raise ShardError(f"{path}: shard file not found")
    try:
        with safe_open(str(path), framework="np") as fh:
            metadata = fh.metadata() or {}
            names = set(fh.keys())
            vectors = fh.get_tensor("vectors") if names == {"vectors"} else None
    except (OSError, SafetensorError) as exc:
        older = (
            " (shards were once .npz files, which ked no longer reads because loading them can "
            "run code: embed the shard again)"
            if path.suffix == ".npz"
            else ""
        )
        raise ShardError(
            f"{path}: not a safetensors shard written by 'ked embed --shard' "
            f"({one_line(exc)}){older}"
        ) from exc
    if metadata.get("format") != FORMAT or vectors is None:
        raise ShardError(
            f"{path}: not a {FORMAT} file (format {metadata.get('format')!r}, "
            f"tensors {sorted(names)})"
        )
    try:
        texts = json.loads(metadata["texts"])
        encoder = json.loads(metadata["encoder"])
        fingerprint = metadata["fingerprint"]
    except (KeyError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: damaged shard metadata ({one_line(exc)})") from exc
    if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        raise ShardError(f"{path}: the shard's texts are not a list of strings")
    if not isinstance(encoder, dict):
        raise ShardError(f"{path}: the shard's encoder description is not a JSON object")
    if vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != len(texts):
        raise ShardError(
            f"{path}: {len(texts)} texts but vectors of shape {vectors.shape} ({vectors.dtype})"
        )
    return Shard(texts, vectors, str(fingerprint), encoder)


def ingest_shard(embedder: Embedder, path: Path) -> int:
    """Commit the vectors of the shard in ``path`` to the cache; returns how many."""
    shard = read_shard(path)
    if shard.fingerprint != embedder.fingerprint:
        raise ShardError(
            f"{path} was made by encoder {shard.fingerprint[:12]}, not "
            f"{embedder.fingerprint[:12]}: give the same encoder options"
        )
    if shard.texts:
        embedder.store(shard.texts, shard.vectors, shard.vectors.shape[1])
    return len(shard.texts)
