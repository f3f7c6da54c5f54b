"""Text encoders: sentence-transformers models and Hugging Face ``transformers`` models.

Both take texts in any order, batch them sorted by length so padding is minimal, and return
float32 vectors in the caller's order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from encoders.text.spec import EncoderSpec

log = logging.getLogger(__name__)

BatchCallback = Callable[[int], None]


class TextEncoder(Protocol):
    dim: int

    def encode(
        self, texts: Sequence[str], batch_size: int, on_batch: BatchCallback | None = None
    ) -> np.ndarray:
        """(len(texts), dim) float32 vectors in the order of ``texts``."""
        ...


def load_text_encoder(spec: EncoderSpec, device: str) -> TextEncoder:
    """Load the model of ``spec`` onto ``device`` in ``spec.dtype``; with
    ``long_texts="chunk"``, wrapped so that long texts are embedded in pieces."""
    log.info("loading text encoder %s (%s) on %s", spec.model, spec.backend, device)
    encoder: SentenceTransformerEncoder | TransformersEncoder = (
        SentenceTransformerEncoder(spec, device)
        if spec.backend == "sentence-transformers"
        else TransformersEncoder(spec, device)
    )
    if spec.long_texts == "truncate":
        return encoder
    from encoders.text.chunking import ChunkedEncoder

    return ChunkedEncoder(encoder, encoder.count_tokens, encoder.token_limit, spec.normalize)


def _length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    order = np.argsort([-n for n in lengths], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class SentenceTransformerEncoder:
    def __init__(self, spec: EncoderSpec, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.model = SentenceTransformer(str(spec.model_path()), device=str(device))
        if spec.max_length is not None:
            self.model.max_seq_length = spec.max_length
        if spec.dtype != "float32":
            self.model.to(getattr(torch, spec.dtype))
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"model {spec.model!r} does not declare its embedding dimension")
        self.dim = int(dim)
        self.token_limit = int(self.model.max_seq_length or 512) - 2  # [CLS] and [SEP]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, without special tokens or truncation."""
        ids = self.model.tokenizer(list(texts), add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
        return [len(i) for i in ids]

    def encode(
        self, texts: Sequence[str], batch_size: int, on_batch: BatchCallback | None = None
    ) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in _length_sorted_batches([len(t) for t in texts], batch_size):
            vectors = self.model.encode(
                [texts[i] for i in batch],
                batch_size=len(batch),
                normalize_embeddings=self.spec.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[batch] = np.asarray(vectors, dtype=np.float32)
            if on_batch:
                on_batch(len(batch))
        return out


class TransformersEncoder:
    """``AutoModel`` with mean, CLS or pooler pooling (``pooler`` is CLS -> dense -> tanh)."""

    def __init__(self, spec: EncoderSpec, device: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = str(spec.model_path())
        self.spec = spec
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = (
            AutoModel.from_pretrained(path, dtype=getattr(torch, spec.dtype)).to(device).eval()
        )
        self.max_length = spec.max_length or min(int(self.tokenizer.model_max_length), 512)
        self.pooling = spec.effective_pooling
        self.dim = int(self.model.config.hidden_size)
        if self.pooling == "pooler" and getattr(self.model, "pooler", None) is None:
            raise ValueError(f"model {spec.model!r} has no pooler; use mean or cls pooling")
        self.token_limit = self.max_length - 2  # [CLS] and [SEP]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, without special tokens or truncation."""
        ids = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int, on_batch: BatchCallback | None = None
    ) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = [
            len(ids)
            for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)[
                "input_ids"
            ]
        ]
        for batch in _length_sorted_batches(lengths, batch_size):
            tokens = self.tokenizer(
                [texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            output = self.model(**tokens)
            vectors = self._pool(output, tokens["attention_mask"])
            if self.spec.normalize:
                vectors = F.normalize(vectors, dim=-1)
            out[batch] = vectors.float().cpu().numpy()
            if on_batch:
                on_batch(len(batch))
        return out

    def _pool(self, output: object, mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = output.last_hidden_state  # type: ignore[attr-defined]
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "pooler":
            return output.pooler_output  # type: ignore[attr-defined]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
