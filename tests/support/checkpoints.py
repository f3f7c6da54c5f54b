"""A real, untrained ked checkpoint for tests that need one to load, not to predict well."""

from __future__ import annotations

from pathlib import Path

import torch

from encoders.ecg import Preprocessing
from encoders.models.checkpoint import save_checkpoint
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text import LabelEntry


def untrained_checkpoint(path: Path) -> Path:
    """Write a small xresnet1d checkpoint (one label, 8-d label space) to ``path``."""
    config = ModelConfig(encoder="xresnet1d_small", text_dim=8)
    entries = [LabelEntry("AFIB", "AFIB", "AFIB", None, None)]
    extra = {"views": ["name"], "text_encoder": {}}
    save_checkpoint(path, KedModel(config), torch.randn(1, 8), entries, Preprocessing(), extra)
    return path
