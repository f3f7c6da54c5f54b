"""The label-query decoder (ECGFM-KED's TQN): label embeddings attend to ECG tokens.

Each label embedding is a query. Every layer (pre-norm) lets the labels self-attend, then
cross-attend to the ECG tokens, then runs a feed-forward block; no positional encodings are used.
A head ``Linear(d, 2048) -> GELU -> Linear(2048, 2)`` turns each label's output into
``(absent, present)`` logits, and the score is ``softmax(logits)[..., 1]``.

As in the reference, one LayerNorm (``norm``) normalises the label queries and the ECG tokens
before the layers and the labels' output after them.

Because labels self-attend, **a label's score depends on which other labels are queried**: the
same ECG gets a different score for "atrial fibrillation" when it is asked together with
"sinus rhythm" than when asked alone. Query a fixed label set (the one used in training) to get
comparable scores; :class:`encoders.models.heads.CosineScoringHead` has no such dependence.
"""

from __future__ import annotations

import torch
from torch import nn


class LabelQueryDecoder(nn.Module):
    """Transformer decoder with label queries and ECG-token memory; ``(B, C, 2)`` logits.

    ``label_dim`` and ``ecg_dim`` are the widths of the label vectors and ECG tokens; each is
    projected to ``d_model`` by a Linear layer when it differs (the reference needs none: 768 for
    both). Defaults reproduce the reference: 7 layers, d_model 768, 4 heads, FFN 1024, dropout 0.1.
    """

    def __init__(
        self,
        *,
        d_model: int = 768,
        num_layers: int = 7,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        label_dim: int | None = None,
        ecg_dim: int | None = None,
        head_hidden_dim: int = 2048,
    ) -> None:
        super().__init__()
        label_dim = label_dim or d_model
        ecg_dim = ecg_dim or d_model
        self.label_dim = label_dim
        self.ecg_dim = ecg_dim
        self.query_proj = nn.Linear(label_dim, d_model) if label_dim != d_model else nn.Identity()
        self.token_proj = nn.Linear(ecg_dim, d_model) if ecg_dim != d_model else nn.Identity()
        layer = nn.TransformerDecoderLayer(
            d_model,
            num_heads,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Linear(d_model, head_hidden_dim), nn.GELU(), nn.Linear(head_hidden_dim, 2)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """Normal(0, 0.02) weights for linear and attention projections, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, std=0.02)
                nn.init.zeros_(module.in_proj_bias)

    def forward(self, label_queries: torch.Tensor, ecg_tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, 2)`` for label queries ``(C, label_dim)`` and tokens ``(B, T, ecg_dim)``.

        Encoder features ``(B, ecg_dim, T)`` become tokens with ``features.transpose(1, 2)``.
        """
        if label_queries.ndim != 2 or label_queries.shape[1] != self.label_dim:
            raise ValueError(
                f"expected label queries of shape (labels, {self.label_dim}), "
                f"got {tuple(label_queries.shape)}"
            )
        if ecg_tokens.ndim != 3 or ecg_tokens.shape[2] != self.ecg_dim:
            raise ValueError(
                f"expected ECG tokens of shape (batch, tokens, {self.ecg_dim}), "
                f"got {tuple(ecg_tokens.shape)}"
            )
        batch = ecg_tokens.shape[0]
        queries = self.norm(self.query_proj(label_queries)).expand(batch, -1, -1)
        memory = self.norm(self.token_proj(ecg_tokens))
        decoded = self.norm(self.decoder(queries, memory))
        return self.head(self.head_dropout(decoded))

    def scores(self, label_queries: torch.Tensor, ecg_tokens: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, C)`` that the queried labels are present: softmax(logits)[..., 1]."""
        return self.forward(label_queries, ecg_tokens).softmax(dim=-1)[..., 1]
