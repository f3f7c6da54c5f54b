"""ECG encoders, scoring heads, the label-query decoder and the reference-checkpoint loader.

- :func:`create_ecg_encoder` / :func:`list_ecg_encoders`: the encoder registry
  (``xresnet1d101``, ``xresnet1d50``, ``xresnet1d34``, ``xresnet1d18``, ``xresnet1d_small``).
- :class:`Projection`, :class:`LabelAdapter`, :class:`CosineScoringHead`: the contrastive heads.
- :class:`LabelQueryDecoder`: the reference's label-query decoder (TQN).
- :func:`load_reference_checkpoint`: ECGFM-KED's released weights in ked's modules;
  :func:`convert_reference` writes them as a ked checkpoint (``ked convert-reference``).
"""

from __future__ import annotations

from encoders.models.heads import CosineScoringHead, LabelAdapter, Projection
from encoders.models.query_decoder import LabelQueryDecoder
from encoders.models.reference_checkpoint import (
    ReferenceCheckpointError,
    ReferenceLoadReport,
    ReferenceModel,
    load_reference_checkpoint,
)
from encoders.models.reference_conversion import (
    ReferenceConversion,
    ReferenceConversionError,
    convert_reference,
    reference_text_encoder,
)
from encoders.models.registry import create_ecg_encoder, list_ecg_encoders, register_ecg_encoder
from encoders.models.xresnet1d import XResNet1d

__all__ = [
    "CosineScoringHead",
    "LabelAdapter",
    "LabelQueryDecoder",
    "Projection",
    "ReferenceCheckpointError",
    "ReferenceConversion",
    "ReferenceConversionError",
    "ReferenceLoadReport",
    "ReferenceModel",
    "XResNet1d",
    "convert_reference",
    "create_ecg_encoder",
    "list_ecg_encoders",
    "load_reference_checkpoint",
    "reference_text_encoder",
    "register_ecg_encoder",
]
