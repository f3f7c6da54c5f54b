"""Pretraining against cached label vectors: data, losses, loop, checkpoints."""

from __future__ import annotations

from encoders.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from encoders.training.loop import LoopSettings, StepInfo
from encoders.training.losses import AlignmentLoss, LossWeights
from encoders.training.pretrain import PretrainConfig, PretrainResult, pretrain

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
