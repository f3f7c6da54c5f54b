"""The ked model: an ECG encoder aligned with cached label vectors.

ECG -> encoder features (B, C_ecg, T') -> pooled over time (mean, or mean and max side by
side) -> projection into the label-vector
space (B, D). Label vectors (C, D) come from the embedding cache, optionally centred (the mean
of the pretraining label texts, a buffer stored with the weights, is subtracted and the result
renormalised, so that the direction every ECG text shares stops dominating the cosine),
optionally whitened (ZCA with the pretraining texts' shrunk covariance, also stored: labels the
text encoder puts close together, such as left and right bundle branch block, move apart), and
optionally through a trainable adapter; the text encoder never runs here. The default head
scores each pair by a scaled cosine plus a bias; the label-query decoder is an option. With
``members`` above 1 the ECG side (encoder, projection, head) is built that many times, each
tower initialised on its own; their logits are averaged (a deep ensemble), and training gives
each tower its own loss on its own output (`ModelOutput.members`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from encoders.models.heads import CosineScoringHead, LabelAdapter, Projection
from encoders.models.query_decoder import LabelQueryDecoder
from encoders.models.registry import create_ecg_encoder
from encoders.models.xresnet1d import XResNet1d
from ked.errors import UserError

Head = Literal["cosine", "decoder"]
Pooling = Literal["mean", "mean+max"]


class LabelVectorError(UserError, ValueError):
    """Label vectors of another width than the text encoder the model was trained with."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored in every checkpoint."""

    encoder: str = "xresnet1d101"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    pooling: Pooling = "mean"
    """Over time: ``mean`` (the reference's), or ``mean+max`` (both, concatenated)."""
    text_dim: int = 384
    projection_hidden: int | None = None
    adapter: bool = False
    center_labels: bool = False
    whiten_labels: float | None = None
    """Shrinkage of the label whitening (0-1, towards the identity); None: no whitening."""
    head: Head = "cosine"
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    members: int = 1
    """ECG towers (encoder, projection and head), each initialised on its own and trained on its
    own loss, whose logits are averaged: a deep ensemble in one model. They share the label
    side (centring, whitening, adapter). 1: a single model."""

    @property
    def label_dim(self) -> int:
        """Width of the space labels are scored in: the adapter's output, else ``text_dim``."""
        return (self.adapter_kwargs.get("out_dim") if self.adapter else None) or self.text_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, C)
    ecg_embeddings: torch.Tensor  # (B, D), projected, not normalised
    label_embeddings: torch.Tensor  # (C, D), after the adapter
    members: tuple[ModelOutput, ...] = ()  # each tower's own output, when there are several


class KedModel(nn.Module):
    label_center: torch.Tensor  # (D,) buffer, only when built with center_labels
    label_whitening: torch.Tensor  # (D, D) buffer, only when built with whiten_labels

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.members < 1:
            raise ValueError(f"members must be at least 1, got {config.members}")
        self.config = config
        self.encoder = cast(XResNet1d, create_ecg_encoder(config.encoder, **config.encoder_kwargs))
        if config.pooling not in ("mean", "mean+max"):
            raise ValueError(f"pooling must be 'mean' or 'mean+max', got {config.pooling!r}")
        width = self.encoder.out_channels
        pooled = width * (2 if config.pooling == "mean+max" else 1)
        self.projection = Projection(pooled, config.label_dim, config.projection_hidden)
        self.adapter = LabelAdapter(
            config.text_dim, enabled=config.adapter, **config.adapter_kwargs
        )
        if config.center_labels:
            self.register_buffer("label_center", torch.zeros(config.text_dim))
        if config.whiten_labels is not None:
            if not config.center_labels or not 0 < config.whiten_labels <= 1:
                raise ValueError("whiten_labels needs center_labels and a shrinkage in (0, 1]")
            self.register_buffer("label_whitening", torch.eye(config.text_dim))
        self.head = CosineScoringHead() if config.head == "cosine" else None
        self.decoder = (
            LabelQueryDecoder(label_dim=config.label_dim, ecg_dim=width, **config.decoder_kwargs)
            if config.head == "decoder"
            else None
        )
        # The other towers score the labels this model has standardised and adapted.
        tower = replace(
            config,
            text_dim=config.label_dim,
            adapter=False,
            center_labels=False,
            whiten_labels=None,
            members=1,
        )
        self.others = nn.ModuleList(KedModel(tower) for _ in range(config.members - 1))

    def towers(self) -> list[KedModel]:
        """The ensemble's members: this model's own tower first."""
        return [self, *cast(list[KedModel], list(self.others))]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, C_ecg, T') of ECG windows (B, 12, T)."""
        return self.encoder(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, C_ecg, T') pooled over time: (B, C_ecg), or (B, 2 C_ecg)."""
        mean = self.encoder.pool(features)
        if self.config.pooling == "mean":
            return mean
        return torch.cat([mean, features.amax(dim=-1)], dim=-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """One projected vector per recording (B, D), the mean of the towers'."""
        return torch.stack([t.projection(t.pool(t.features(x))) for t in self.towers()]).mean(0)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder features pooled over time (B, C), the towers' side by side."""
        return torch.cat([t.pool(t.features(x)) for t in self.towers()], dim=-1)

    def fit_label_space(self, texts: torch.Tensor) -> None:
        """Centre (and whiten, if so built) label vectors with the statistics of ``texts``
        (N, D), the pretraining label texts."""
        if not self.config.center_labels:
            raise ValueError("this model was built without center_labels")
        texts = texts.detach().float()
        self.label_center.copy_(texts.mean(0))
        if self.config.whiten_labels is not None:
            self.label_whitening.copy_(_whitening(texts, self.config.whiten_labels))

    def standardize_texts(self, vectors: torch.Tensor) -> torch.Tensor:
        """Text vectors (labels or reports) centred and whitened as this model was built to,
        with the stored statistics; unchanged for a model built without centring."""
        if not self.config.center_labels:
            return vectors
        vectors = vectors - self.label_center
        if self.config.whiten_labels is not None:
            vectors = vectors @ self.label_whitening
        return F.normalize(vectors, dim=-1)

    def label_space(self, label_vectors: torch.Tensor) -> torch.Tensor:
        """Cached label vectors as the model scores them: standardised, then adapted."""
        return self.adapter(self.standardize_texts(label_vectors))

    def forward(self, x: torch.Tensor, label_vectors: torch.Tensor) -> ModelOutput:
        """Logits of every label for every recording, and the embeddings behind them; with
        several towers, their means, and each tower's output in ``members``."""
        if label_vectors.shape[-1] != self.config.text_dim:
            raise LabelVectorError(
                f"label vectors of dim {label_vectors.shape[-1]} given to a model that scores "
                f"{self.config.text_dim}-d vectors: embed the labels with the text encoder the "
                "checkpoint records"
            )
        labels = self.label_space(label_vectors)
        if not self.others:
            return self._score(x, labels)
        members = tuple(t._score(x, labels) for t in self.towers())
        return ModelOutput(
            torch.stack([m.logits for m in members]).mean(0),
            torch.stack([m.ecg_embeddings for m in members]).mean(0),
            labels,
            members,
        )

    def _score(self, x: torch.Tensor, labels: torch.Tensor) -> ModelOutput:
        """This tower's logits for ECG windows ``x`` against label vectors in its space."""
        features = self.features(x)
        ecg = self.projection(self.pool(features))
        if self.decoder is not None:
            pair = self.decoder(labels, features.transpose(1, 2))
            logits = pair[..., 1] - pair[..., 0]  # sigmoid(l1 - l0) == softmax(l)[..., 1]
        else:
            assert self.head is not None
            logits = self.head(ecg, labels)
        return ModelOutput(logits, ecg, labels)


def _whitening(texts: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """ZCA whitening matrix (D, D) of ``texts`` (N, D), its covariance shrunk towards the
    identity: ``(1 - shrinkage) * cov + shrinkage * mean variance * I``. A few hundred texts
    span a small part of the space, so some shrinkage is needed."""
    centred = F.normalize(texts, dim=-1) - F.normalize(texts, dim=-1).mean(0)
    cov = centred.T @ centred / max(len(texts) - 1, 1)
    target = cov.diagonal().mean() * torch.eye(cov.shape[0])
    values, vectors = torch.linalg.eigh((1 - shrinkage) * cov + shrinkage * target)
    return vectors @ torch.diag(values.clamp(min=1e-12).rsqrt()) @ vectors.T
