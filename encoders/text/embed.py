"""The embedding job: texts in, cached vectors out, embedding only what is missing.

Vectors already in the cache (and intact) are served without loading the model; missing or
corrupt ones are embedded in length-sorted batches and committed every ``commit_every``
texts, so an interrupted job resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from encoders.text.device import select_device, select_dtype
from encoders.text.spec import EncoderSpec
from kb_store.connection import ReadOnlyError
from kb_store.embeddings import EmbeddingCache, text_sha256
from kb_store.store import KnowledgeBase

if TYPE_CHECKING:  # the backends need torch, loaded only when texts are missing
    from encoders.text.backends import TextEncoder

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (texts done in this call, total to embed)


@dataclass
class EmbedSummary:
    texts: int = 0
    unique: int = 0
    cache_hits: int = 0
    embedded: int = 0
    corrupt: int = 0
    model_loaded: bool = False
    wall_s: float = 0.0

    @property
    def texts_per_s(self) -> float:
        return self.embedded / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Embedder:
    """Embeds texts through the cache of one knowledge base with one encoder setting."""

    kb: KnowledgeBase
    spec: EncoderSpec
    device: str | None = None
    batch_size: int = 64
    commit_every: int = 256

    def __post_init__(self) -> None:
        self.cache = EmbeddingCache(self.kb)
        self._device = select_device(self.device)
        self.spec = _with_dtype(self.spec, self._device)
        self.fingerprint, self.description = self.spec.fingerprint(self.cache.file_sha256)
        self._encoder: TextEncoder | None = None

    @property
    def dim(self) -> int | None:
        registered = self.cache.encoder(self.fingerprint)
        return registered[1] if registered else None

    def encoder(self) -> TextEncoder:
        """The loaded model (loaded on first use only)."""
        if self._encoder is None:
            from encoders.text.backends import load_text_encoder

            self._encoder = load_text_encoder(self.spec, self._device)
        return self._encoder

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts without an intact cached vector, ordered by their hash."""
        unique = {text_sha256(t): t for t in texts}
        found = self.cache.lookup(list(unique), self.fingerprint)
        return [unique[h] for h in sorted(unique) if h not in found.vectors]

    def store(self, texts: Sequence[str], vectors: np.ndarray, dim: int) -> None:
        """Commit vectors made elsewhere (e.g. by shard workers) with this encoder setting."""
        if vectors.shape != (len(texts), dim):
            raise ValueError(f"expected vectors of shape {(len(texts), dim)}, got {vectors.shape}")
        with self.kb.transaction():
            self.cache.register_encoder(self.fingerprint, self.description, dim)
            self.cache.store(list(zip(texts, vectors, strict=True)), self.fingerprint)

    def embed(
        self, texts: Sequence[str], progress: Progress | None = None
    ) -> tuple[np.ndarray, EmbedSummary]:
        """Vectors for ``texts`` (in order) and what it took to get them."""
        started = time.perf_counter()
        summary = EmbedSummary(texts=len(texts))
        hashes = [text_sha256(t) for t in texts]
        unique = dict(zip(hashes, texts, strict=True))
        summary.unique = len(unique)
        found = self.cache.lookup(list(unique), self.fingerprint)
        summary.cache_hits = len(found.vectors)
        summary.corrupt = len(found.corrupt)
        missing = [(h, t) for h, t in unique.items() if h not in found.vectors]
        if missing and self.kb.read_only:
            raise ReadOnlyError(f"{len(missing)} texts are not embedded yet")
        if missing:
            encoder = self.encoder()
            summary.model_loaded = True
            with self.kb.transaction():
                self.cache.register_encoder(self.fingerprint, self.description, encoder.dim)
            done = 0
            for start in range(0, len(missing), self.commit_every):
                chunk = missing[start : start + self.commit_every]
                vectors = encoder.encode(
                    [t for _, t in chunk],
                    self.batch_size,
                    on_batch=(lambda n: progress(n, len(missing))) if progress else None,
                )
                self.cache.store(
                    [(t, v) for (_, t), v in zip(chunk, vectors, strict=True)], self.fingerprint
                )
                found.vectors.update({h: v for (h, _), v in zip(chunk, vectors, strict=True)})
                done += len(chunk)
                log.info("embedded %d/%d texts", done, len(missing))
            summary.embedded = len(missing)
        summary.wall_s = time.perf_counter() - started
        matrix = np.stack([found.vectors[h] for h in hashes]) if hashes else np.zeros((0, 0))
        return matrix.astype(np.float32, copy=False), summary


def _with_dtype(spec: EncoderSpec, device: str) -> EncoderSpec:
    return replace(spec, dtype=select_dtype(spec.dtype, device))
