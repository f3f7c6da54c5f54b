"""Scoring a dataset with a model, and the macro AUROC that selects checkpoints."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset

from encoders.models.ked_model import KedModel


@torch.inference_mode()
def predict(
    model: KedModel,
    dataset: Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    label_vectors: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and targets (N, C) in dataset order (no shuffling, no dropped rows)."""
    was_training = model.training
    model.eval()
    scores, targets = [], []
    for x, _mask, target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        scores.append(model(x.to(device), label_vectors.to(device)).logits.float().cpu())
        targets.append(target)
    model.train(was_training)
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def macro_auroc(scores: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Mean AUROC over labels with both classes present, and how many labels that is.

    Unknown (NaN) targets are left out per label.
    """
    values = []
    for c in range(targets.shape[1]):
        known = ~np.isnan(targets[:, c])
        column = targets[known, c]
        if 0 < column.sum() < len(column):
            values.append(roc_auc_score(column, scores[known, c]))
    return (float(np.mean(values)) if values else float("nan")), len(values)
