"""Heads that put ECG features and cached label vectors in one space and score them.

- :class:`Projection` maps pooled ECG features ``(B, C)`` into the label-vector space ``(B, D)``.
- :class:`LabelAdapter` is an optional trainable MLP on the *cached* label vectors (the reference
  puts a 3-layer MLP on top of its text encoder; here the text tower never runs in training).
- :class:`CosineScoringHead` scores every (ECG, label) pair by a temperature-scaled cosine plus a
  bias, with an explicit learnable ``logit_scale`` (open_clip) and ``bias`` (SigLIP).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dropout: float
) -> nn.Sequential:
    """``num_layers`` Linear layers with GELU (and dropout) between them; layers at even indices."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(pairwise(dims)):
        if index > 0:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class Projection(nn.Module):
    """ECG features ``(B, in_dim)`` -> text space ``(B, out_dim)``.

    Linear when ``hidden_dim`` is ``None``; otherwise Linear -> GELU -> (Dropout) -> Linear.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        num_layers = 1 if hidden_dim is None else 2
        self.net = _mlp(in_dim, hidden_dim or out_dim, out_dim, num_layers, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project ``features`` of shape ``(B, in_dim)``."""
        return self.net(features)


class LabelAdapter(nn.Module):
    """Optional trainable MLP on cached label vectors ``(C, dim) -> (C, dim)``.

    - ``enabled=False``: the identity, without parameters.
    - ``residual=True`` (default): ``x + mlp(x)`` with the last layer initialised to zero, so
      training starts exactly from the text encoder's geometry.
    - ``residual=False``: ``mlp(x)``, the reference's form (Linear-GELU-Linear-GELU-Linear for
      ``num_layers=3``); its weights may be loaded from the reference's ``mlp_embed``
      (see :func:`encoders.models.reference_checkpoint.load_reference_checkpoint`), and
      ``out_dim`` may differ from ``dim`` (the width of the space labels are scored in).
    """

    def __init__(
        self,
        dim: int,
        *,
        enabled: bool = True,
        residual: bool = True,
        num_layers: int = 3,
        hidden_dim: int | None = None,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.residual = residual
        self.out_dim = (out_dim or dim) if enabled else dim
        if enabled and residual and self.out_dim != dim:
            raise ValueError(f"a residual adapter keeps the width {dim}; got out_dim {out_dim}")
        self.mlp = _mlp(dim, hidden_dim or dim, self.out_dim, num_layers, 0.0) if enabled else None
        if self.mlp is not None:
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
                    nn.init.zeros_(layer.bias)
            last = self.mlp[-1]
            if residual and isinstance(last, nn.Linear):
                nn.init.zeros_(last.weight)

    def forward(self, label_vectors: torch.Tensor) -> torch.Tensor:
        """Adapt ``label_vectors`` of shape ``(..., dim)``."""
        if self.mlp is None:
            return label_vectors
        adapted = self.mlp(label_vectors)
        return label_vectors + adapted if self.residual else adapted


class CosineScoringHead(nn.Module):
    """Scores ``(B, C) = exp(logit_scale) * cos(ecg_emb, label_vec) + bias``.

    ``logit_scale`` is learnable, starts at ``init_logit_scale`` (``log(1/0.07)``, open_clip) and
    is clamped to at most ``max_logit_scale`` (``log(100)``). The scalar ``bias`` starts at
    ``init_bias`` (-10, as in SigLIP) so that sigmoid scores start low, as suits multi-label data.
    Each score depends only on its own ECG and label: the set of labels queried does not matter.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
        init_bias: float = -10.0,
        learn_bias: bool = True,
    ) -> None:
        super().__init__()
        if init_logit_scale > max_logit_scale:
            raise ValueError(
                f"init_logit_scale {init_logit_scale} exceeds max_logit_scale {max_logit_scale}"
            )
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=learn_bias)
        self.max_logit_scale = max_logit_scale

    def forward(self, ecg_embeddings: torch.Tensor, label_vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for ECG embeddings ``(B, D)`` and label vectors ``(C, D)``."""
        if ecg_embeddings.shape[-1] != label_vectors.shape[-1]:
            raise ValueError(
                f"ECG embeddings of dim {ecg_embeddings.shape[-1]} cannot be scored against "
                f"label vectors of dim {label_vectors.shape[-1]}"
            )
        cosine = F.normalize(ecg_embeddings, dim=-1) @ F.normalize(label_vectors, dim=-1).T
        scale = self.logit_scale.clamp(max=self.max_logit_scale).exp()
        return scale * cosine + self.bias
