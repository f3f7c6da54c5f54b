"""Texts longer than the text encoder's token limit, embedded whole instead of cut off.

A sentence-transformers model silently truncates at ``max_seq_length`` (256 tokens for
all-MiniLM-L6-v2), so the end of a long knowledge text (the morphology and leads of the
``full`` view) would never reach its vector. With ``long_texts="chunk"`` a text over the limit
is split at sentence and clause ends into pieces that fit, each piece is embedded, and the
text's vector is the token-weighted mean of its pieces' vectors (renormalised when the encoder
normalises). Texts within the limit are embedded exactly as before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import numpy as np

from encoders.text.backends import BatchCallback, TextEncoder

log = logging.getLogger(__name__)

_BREAKS = re.compile(r"(?<=[.;:])\s+")
TokenCounter = Callable[[Sequence[str]], list[int]]


def split_text(text: str, tokens: TokenCounter, limit: int) -> list[str]:
    """``text`` as consecutive pieces of at most ``limit`` tokens each, cut at sentence or
    clause ends (a single clause over the limit stays one piece, which the model truncates)."""
    if tokens([text])[0] <= limit:
        return [text]
    clauses = [c for c in _BREAKS.split(text) if c.strip()]
    sizes = tokens(clauses)
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for clause, size in zip(clauses, sizes, strict=True):
        if current and used + size > limit:
            pieces.append(" ".join(current))
            current, used = [], 0
        current.append(clause)
        used += size
    pieces.append(" ".join(current))
    return pieces


class ChunkedEncoder:
    """Wraps a text encoder: texts over ``limit`` tokens are embedded piece by piece."""

    def __init__(
        self, inner: TextEncoder, tokens: TokenCounter, limit: int, normalize: bool
    ) -> None:
        self.inner = inner
        self.tokens = tokens
        self.limit = limit
        self.normalize = normalize
        self.dim = inner.dim

    def encode(
        self, texts: Sequence[str], batch_size: int, on_batch: BatchCallback | None = None
    ) -> np.ndarray:
        pieces = [split_text(text, self.tokens, self.limit) for text in texts]
        flat = [piece for text_pieces in pieces for piece in text_pieces]
        if len(flat) > len(texts):
            log.info("%d long texts embedded in %d pieces", len(texts), len(flat))
        vectors = self.inner.encode(flat, batch_size)
        weights = np.asarray(self.tokens(flat), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        for row, text_pieces in enumerate(pieces):
            stop = start + len(text_pieces)
            out[row] = np.average(vectors[start:stop], axis=0, weights=weights[start:stop])
            start = stop
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        if on_batch:
            on_batch(len(texts))
        return out
