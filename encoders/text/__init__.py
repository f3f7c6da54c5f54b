"""Text side: encoder settings and fingerprints, backends, the embedding job, label vectors.

Names load with their module on first use (:mod:`encoders.lazy`): the command line declares
its options from the encoder settings without loading the embedding job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from encoders.lazy import lazy_getattr

if TYPE_CHECKING:
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

__getattr__ = lazy_getattr(__name__)

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
