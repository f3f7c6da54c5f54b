"""ECGFM-KED's modules re-created in *their* layout, and checkpoints saved in the released layout.

fastai-style numeric ``nn.Sequential`` xresnet1d101 with ``convs``/``convpath``/``idpath``
blocks; a DETR-style pre-norm decoder with ``decoder.layers``, ``decoder_norm`` shared as
``decoder.norm``, ``mlp_head``; the text side's ``mlp_embed``. Randomly initialised (norms too,
so that a wrong mapping shows), saved as the released ``torch.save`` dict.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class RefConvLayer(nn.Sequential):
    """fastai ConvLayer (bn_1st): conv without bias, BN, optional ReLU."""

    def __init__(self, ni: int, nf: int, ks: int, stride: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv1d(ni, nf, ks, stride=stride, padding=(ks - 1) // 2, bias=False),
            nn.BatchNorm1d(nf),
        ]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class RefResBlock(nn.Module):
    """fastai ResBlock (expansion 4): ``convs`` also reachable as ``convpath.0``; ``idpath``."""

    def __init__(self, ni: int, nh: int, stride: int, ks: int = 5) -> None:
        super().__init__()
        ni, nf = ni * 4, nh * 4
        self.convs = nn.Sequential(
            RefConvLayer(ni, nh, 1),
            RefConvLayer(nh, nh, ks, stride=stride),
            RefConvLayer(nh, nf, 1, act=False),
        )
        self.convpath = nn.Sequential(self.convs)
        idpath: list[nn.Module] = []
        if ni != nf:
            idpath.append(RefConvLayer(ni, nf, 1, act=False))
        if stride != 1:
            idpath.insert(0, nn.AvgPool1d(2, ceil_mode=True))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convpath(x) + self.idpath(x))


def reference_xresnet1d101() -> nn.Sequential:
    sizes = [64 // 4, 64, 128, 128, 192]
    stages = [
        nn.Sequential(
            *(
                RefResBlock(
                    sizes[i] if j == 0 else sizes[i + 1],
                    sizes[i + 1],
                    stride=2 if i > 0 and j == 0 else 1,
                )
                for j in range(count)
            )
        )
        for i, count in enumerate([3, 4, 23, 3])
    ]
    stem = [RefConvLayer(12, 32, 5, 2), RefConvLayer(32, 32, 5), RefConvLayer(32, 64, 5)]
    return nn.Sequential(*stem, nn.MaxPool1d(3, stride=2, padding=1), *stages)


class RefDecoderLayer(nn.Module):
    """DETR's TransformerDecoderLayer, pre-norm path, sequence-first tensors."""

    def __init__(self, d: int = 768, heads: int = 4, ffn: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1 = nn.Linear(d, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        tgt2 = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(tgt2, tgt2, value=tgt2)[0])
        tgt2 = self.norm2(tgt)
        tgt = tgt + self.dropout2(self.multihead_attn(tgt2, memory, value=memory)[0])
        tgt2 = self.norm3(tgt)
        return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt2)))))


class RefTransformerDecoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int, norm: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory)
        return self.norm(tgt)


class RefTQN(nn.Module):
    """The reference's TQNModel: ``decoder_norm`` normalises inputs and is the decoder's norm."""

    def __init__(self, num_layers: int = 7) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.decoder_norm = nn.LayerNorm(768)
        self.decoder = RefTransformerDecoder(RefDecoderLayer(), num_layers, self.decoder_norm)
        self.dropout_feas = nn.Dropout(0.1)
        self.mlp_head = nn.Sequential(nn.Linear(768, 2048), nn.GELU(), nn.Linear(2048, 2))

    def forward(self, ecg_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        batch = ecg_features.shape[0]
        ecg = self.decoder_norm(ecg_features.transpose(0, 1))
        text = self.decoder_norm(text_features.unsqueeze(1).repeat(1, batch, 1))
        features = self.dropout_feas(self.decoder(text, ecg)).transpose(0, 1)
        return self.mlp_head(features)


def randomise_norms(module: nn.Module) -> None:
    """Non-trivial BN/LN affine parameters and BN statistics, so a wrong mapping shows."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.BatchNorm1d, nn.LayerNorm)):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(std=0.1)
            if isinstance(layer, nn.BatchNorm1d):
                assert layer.running_mean is not None and layer.running_var is not None
                assert layer.num_batches_tracked is not None
                layer.running_mean.normal_(std=0.1)
                layer.running_var.uniform_(0.5, 2.0)
                layer.num_batches_tracked.fill_(1234)


def reference_text_encoder_state(
    mlp_embed: nn.Sequential, tower: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The text side: ``mlp_embed``, the BERT tower's ``tower`` state (default: a few random
    fragments of Bio_ClinicalBERT's) as ``bert_model.*``, and ``logit_scale``."""
    state = {f"mlp_embed.{key}": value for key, value in mlp_embed.state_dict().items()}
    if tower is None:
        tower = {
            "embeddings.word_embeddings.weight": torch.randn(32, 768),
            "encoder.layer.11.output.dense.weight": torch.randn(768, 64),
            "pooler.dense.weight": torch.randn(768, 768),
        }
    state |= {f"bert_model.{key}": value for key, value in tower.items()}
    state["bert_model.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return state


def reference_mlp_embed(text_dim: int = 768, d_model: int = 768) -> nn.Sequential:
    """The text side's 3-layer MLP: ``text_dim`` -> ``d_model`` -> ``d_model`` -> ``d_model``."""
    return nn.Sequential(
        nn.Linear(text_dim, d_model),
        nn.GELU(),
        nn.Linear(d_model, d_model),
        nn.GELU(),
        nn.Linear(d_model, d_model),
    )


@dataclass
class ReferenceModules:
    """The modules a released-layout checkpoint was saved from (eval mode) and its path."""

    path: Path
    ecg_model: nn.Sequential
    tqn: RefTQN
    mlp_embed: nn.Sequential


def save_reference_checkpoint(
    path: Path,
    *,
    text_dim: int = 768,
    decoder_layers: int = 7,
    seed: int = 0,
    text_tower: dict[str, torch.Tensor] | None = None,
) -> ReferenceModules:
    """Random reference modules saved at ``path`` in the released layout (with optimizer and
    scheduler state, config and epoch 3); ``text_dim`` is the width ``mlp_embed`` takes,
    ``text_tower`` the state of the BERT tower stored as ``bert_model.*``."""
    torch.manual_seed(seed)
    ecg_model, tqn = reference_xresnet1d101(), RefTQN(decoder_layers)
    randomise_norms(ecg_model)
    randomise_norms(tqn)
    mlp_embed = reference_mlp_embed(text_dim)
    params = [*ecg_model.parameters(), *tqn.parameters()]
    optimizer = torch.optim.AdamW(params[:2], lr=5e-5)
    torch.save(
        {
            "ecg_model": ecg_model.state_dict(),
            "model": tqn.state_dict(),
            "text_encoder": reference_text_encoder_state(mlp_embed, text_tower),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"t_initial": 10, "warmup_t": 1, "last_epoch": 3},
            "config": {
                "ecg_model_name": "xresnet1d_101",
                "tqn_model_layers": decoder_layers,
                "lr": 5e-5,
            },
            "epoch": 3,
        },
        path,
    )
    return ReferenceModules(path, ecg_model.eval(), tqn.eval(), mlp_embed.eval())
