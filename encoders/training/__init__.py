"""Pretraining against cached label vectors: data, losses, loop, checkpoints, the recipe.

Names load with their module on first use (:mod:`encoders.lazy`): the command line reads the
recipe's defaults (:mod:`encoders.training.recipe`) without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from encoders.lazy import lazy_getattr

if TYPE_CHECKING:
    from encoders.models.checkpoint import Checkpoint, CheckpointError, load_checkpoint
    from encoders.training.loop import LoopSettings, StepInfo
    from encoders.training.losses import AlignmentLoss, LossWeights
    from encoders.training.pretraining import PretrainConfig, PretrainResult, pretrain

__getattr__ = lazy_getattr(__name__)

__all__ = [
    "AlignmentLoss",
    "Checkpoint",
    "CheckpointError",
    "LoopSettings",
    "LossWeights",
    "PretrainConfig",
    "PretrainResult",
    "StepInfo",
    "load_checkpoint",
    "pretrain",
]
