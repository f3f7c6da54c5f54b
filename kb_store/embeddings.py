"""The text-embedding cache: vectors keyed by (SHA-256 of the text, encoder fingerprint).

Content-addressed: a text shared by two diagnoses or two vocabularies is stored and embedded
once per encoder. Every vector carries the SHA-256 of its float32 bytes; a vector whose
checksum or length does not match, or that is not finite or all zero (no encoder makes one,
whatever its checksum says), is reported as corrupt and never served.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kb_store.store import KnowledgeBase
from ked.errors import UserError

log = logging.getLogger(__name__)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vector_sha256(vector: np.ndarray) -> str:
    """Checksum of a vector's little-endian float32 bytes."""
    return hashlib.sha256(np.asarray(vector, dtype="<f4").tobytes()).hexdigest()


def _intact(vector: np.ndarray, dim: int) -> bool:
    """The right length, every value finite, and not all zero."""
    return vector.shape == (dim,) and bool(np.isfinite(vector).all()) and bool(vector.any())


class EncoderMismatchError(UserError, ValueError):
    """A fingerprint registered with another dimension: the cache would mix encoders."""


@dataclass
class Lookup:
    """Valid cached vectors by text hash, and the hashes whose stored vector is corrupt."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)


class EmbeddingCache:
    """Cache operations on an open knowledge base."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.con = kb.con

    def encoder(self, fingerprint: str) -> tuple[dict[str, Any], int] | None:
        """(spec, dimension) of a registered encoder."""
        row = self.con.execute(
            "SELECT spec, dim FROM text_encoders WHERE fingerprint = ?", [fingerprint]
        ).fetchone()
        return (json.loads(row[0]), int(row[1])) if row else None

    def register_encoder(self, fingerprint: str, spec: dict[str, Any], dim: int) -> None:
        known = self.encoder(fingerprint)
        if known is None:
            self.con.execute(
                "INSERT INTO text_encoders (fingerprint, spec, dim) VALUES (?, ?, ?)",
                [fingerprint, json.dumps(spec, sort_keys=True), dim],
            )
        elif known[1] != dim:
            raise EncoderMismatchError(
                f"encoder {fingerprint[:12]} is registered with dimension {known[1]}, "
                f"but produced {dim}"
            )

    def lookup(self, hashes: Sequence[str], fingerprint: str) -> Lookup:
        """Cached vectors of ``hashes`` for ``fingerprint``, verified against their checksums."""
        registered = self.encoder(fingerprint)
        result = Lookup()
        if registered is None or not hashes:
            return result
        dim = registered[1]
        columns = self.con.execute(
            "SELECT text_sha256, vector, vector_sha256 FROM embeddings "
            "WHERE fingerprint = ? AND list_contains(?, text_sha256)",
            [fingerprint, sorted(set(hashes))],
        ).fetchnumpy()
        rows = zip(columns["text_sha256"], columns["vector"], columns["vector_sha256"], strict=True)
        for key, stored, checksum in rows:
            vector = np.asarray(stored, dtype=np.float32)
            if _intact(vector, dim) and vector_sha256(vector) == checksum:
                result.vectors[str(key)] = vector
            else:
                result.corrupt.append(str(key))
        if result.corrupt:
            log.warning(
                "%d cached vectors failed their check (length, finiteness, all zero or "
                "checksum) and will be re-embedded",
                len(result.corrupt),
            )
        return result

    def store(self, items: Sequence[tuple[str, np.ndarray]], fingerprint: str) -> None:
        """Store (text, vector) pairs in one transaction, replacing any corrupt copies."""
        if not items:
            return
        texts = [text for text, _ in items]
        hashes = [text_sha256(text) for text in texts]
        vectors = [np.asarray(v, dtype=np.float32) for _, v in items]
        sums = [vector_sha256(v) for v in vectors]
        new_embeddings = pa.table(  # noqa: F841 (read by DuckDB below)
            {
                "text_sha256": hashes,
                "text": texts,
                "vector": pa.array([v.tolist() for v in vectors], type=pa.list_(pa.float32())),
                "vector_sha256": sums,
            }
        )
        with self.kb.transaction():
            # DuckDB reads the local Arrow table ``new_embeddings`` by its name.
            self.con.execute(
                "INSERT OR IGNORE INTO texts SELECT DISTINCT text_sha256, text FROM new_embeddings"
            )
            self.con.execute(
                "INSERT OR REPLACE INTO embeddings (text_sha256, fingerprint, vector, "
                "vector_sha256) SELECT text_sha256, ?, vector, vector_sha256 FROM new_embeddings",
                [fingerprint],
            )

    def file_sha256(self, path: Path) -> str:
        """SHA-256 of a file, remembered by (path, size, mtime) so unchanged files hash once."""
        path = path.resolve()
        stat = path.stat()
        key = [str(path), stat.st_size, stat.st_mtime_ns]
        row = self.con.execute(
            "SELECT sha256 FROM file_digests WHERE path = ? AND size = ? AND mtime_ns = ?", key
        ).fetchone()
        if row:
            return str(row[0])
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        value = digest.hexdigest()
        if not self.kb.read_only:
            self.con.execute(
                "INSERT OR IGNORE INTO file_digests VALUES (?, ?, ?, ?)", [*key, value]
            )
        return value

    def counts(self) -> dict[str, int]:
        """Rows per encoder fingerprint."""
        rows = self.con.execute(
            "SELECT fingerprint, count(*) FROM embeddings GROUP BY fingerprint"
        ).fetchall()
        return {str(fp): int(n) for fp, n in rows}
