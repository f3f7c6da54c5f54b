"""Text side: encoder settings and fingerprints, backends, the embedding job, label vectors."""

from __future__ import annotations

from encoders.text.embed import Embedder, EmbedSummary
from encoders.text.labels import (
    LabelEntry,
    LabelMatrix,
    MissingKnowledgeError,
    NotEmbeddedError,
    label_entries,
    label_matrix,
    view_texts,
)
from encoders.text.spec import DEFAULT_MODEL, EncoderSpec, ModelNotFoundError

__all__ = [
    "DEFAULT_MODEL",
    "EmbedSummary",
    "Embedder",
    "EncoderSpec",
    "LabelEntry",
    "LabelMatrix",
    "MissingKnowledgeError",
    "ModelNotFoundError",
    "NotEmbeddedError",
    "label_entries",
    "label_matrix",
    "view_texts",
]
