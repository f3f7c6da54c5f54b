"""1-D XResNet ECG encoders (fastai-style), the family of ECGFM-KED's ``xresnet1d101``.

Layout: a stem of three conv-BN-ReLU layers (the first with stride 2) and a max-pool, then four
stages of residual blocks; the first stage keeps the length, the others halve it. A block is either
a bottleneck (1x1 conv, k-conv carrying the stride, 1x1 conv) or a basic block (two k-convs); the
BN after its last conv starts at zero so each block starts as its shortcut. The shortcut
average-pools when the block is strided and projects with a 1x1 conv + BN when widths differ. No
classification head: ``forward`` returns per-time-step features ``(B, C, T')`` (tokens for the
label-query decoder) and :meth:`XResNet1d.pool` averages them over time for contrastive losses.

Module names are ked's own (``stem``, ``stages.S.B.convs.K.{conv,bn}``, ``stages.S.B.proj``);
:mod:`encoders.models.reference_checkpoint` maps the reference's numeric layout onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from encoders.models.registry import register_ecg_encoder

# Mid widths of the four stages in ECGFM-KED's xresnet1d101 (outputs x4: 256, 512, 512, 768).
ECG_BOTTLENECK_WIDTHS = (64, 128, 128, 192)
# fastai's widths for the basic-block (expansion 1) XResNets.
BASIC_WIDTHS = (64, 128, 256, 512)


class ConvBN1d(nn.Module):
    """Conv1d without bias, BatchNorm1d, and optionally ReLU ('same' padding for odd kernels).

    Kaiming-normal conv weights; BN scale 1 (0 with ``zero_bn``, for a block's last conv) and
    shift 0.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        relu: bool = True,
        zero_bn: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            bias=False,
        )
        self.bn = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.constant_(self.bn.weight, 0.0 if zero_bn else 1.0)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``act(bn(conv(x)))``."""
        return self.act(self.bn(self.conv(x)))


class ResBlock1d(nn.Module):
    """Residual block: ``relu(convs(x) + proj(pool(x)))``.

    A bottleneck (``expansion > 1``) maps ``in_channels -> mid_channels`` (1x1), then
    ``mid -> mid`` (k, strided), then ``mid -> mid * expansion`` (1x1); a basic block
    (``expansion == 1``) runs two k-convs, the first strided.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        expansion: int,
        stride: int,
        kernel_size: int,
    ) -> None:
        super().__init__()
        out_channels = mid_channels * expansion
        if expansion == 1:
            layers = [
                ConvBN1d(in_channels, mid_channels, kernel_size, stride),
                ConvBN1d(mid_channels, out_channels, kernel_size, relu=False, zero_bn=True),
            ]
        else:
            layers = [
                ConvBN1d(in_channels, mid_channels, 1),
                ConvBN1d(mid_channels, mid_channels, kernel_size, stride),
                ConvBN1d(mid_channels, out_channels, 1, relu=False, zero_bn=True),
            ]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AvgPool1d(2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.proj = (
            ConvBN1d(in_channels, out_channels, 1, relu=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum of the conv path and the (pooled, projected) shortcut, then ReLU."""
        return self.act(self.convs(x) + self.proj(self.pool(x)))


class XResNet1d(nn.Module):
    """A headless 1-D XResNet: ``(B, in_channels, T) -> (B, out_channels, T')``.

    ``block_counts`` and ``widths`` give the number of blocks and the mid width of each stage;
    a stage outputs ``width * expansion`` channels. ``T' = ceil(T / 32)`` for four stages.
    """

    def __init__(
        self,
        block_counts: Sequence[int],
        widths: Sequence[int],
        expansion: int,
        *,
        in_channels: int = 12,
        stem_widths: Sequence[int] = (32, 32, 64),
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if len(block_counts) != len(widths):
            raise ValueError(
                f"block_counts {list(block_counts)} and widths {list(widths)} differ in length"
            )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        stem_channels = [in_channels, *stem_widths]
        self.stem = nn.Sequential(
            *(
                ConvBN1d(stem_channels[i], stem_channels[i + 1], kernel_size, 2 if i == 0 else 1)
                for i in range(len(stem_widths))
            )
        )
        self.stem_pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)
        stages = []
        channels = stem_channels[-1]
        for stage, (count, width) in enumerate(zip(block_counts, widths, strict=True)):
            blocks = []
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ResBlock1d(channels, width, expansion, stride, kernel_size))
                channels = width * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.in_channels = in_channels
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, out_channels, T')`` of ECGs ``x`` of shape ``(B, in_channels, T)``."""
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected ECGs of shape (batch, {self.in_channels}, time), got {tuple(x.shape)}"
            )
        return self.stages(self.stem_pool(self.stem(x)))

    @staticmethod
    def pool(features: torch.Tensor) -> torch.Tensor:
        """Mean over time: ``(B, C, T') -> (B, C)``."""
        return features.mean(dim=-1)


@register_ecg_encoder
def xresnet1d101(**kwargs: Any) -> XResNet1d:
    """ECGFM-KED's encoder: bottleneck blocks [3, 4, 23, 3], 768 output channels, 7.87 M params."""
    return XResNet1d([3, 4, 23, 3], ECG_BOTTLENECK_WIDTHS, 4, **kwargs)


@register_ecg_encoder
def xresnet1d50(**kwargs: Any) -> XResNet1d:
    """Bottleneck blocks [3, 4, 6, 3] with the xresnet1d101 widths (768 output channels)."""
    return XResNet1d([3, 4, 6, 3], ECG_BOTTLENECK_WIDTHS, 4, **kwargs)


@register_ecg_encoder
def xresnet1d34(**kwargs: Any) -> XResNet1d:
    """Basic blocks [3, 4, 6, 3], fastai widths (512 output channels)."""
    return XResNet1d([3, 4, 6, 3], BASIC_WIDTHS, 1, **kwargs)


@register_ecg_encoder
def xresnet1d18(**kwargs: Any) -> XResNet1d:
    """Basic blocks [2, 2, 2, 2], fastai widths (512 output channels)."""
    return XResNet1d([2, 2, 2, 2], BASIC_WIDTHS, 1, **kwargs)


@register_ecg_encoder
def xresnet1d_small(**kwargs: Any) -> XResNet1d:
    """A narrow CPU-friendly encoder: one basic block per stage, 256 output channels, 0.71 M params.

    One epoch over 300 ECGs of 12 x 1000 (batch 32, forward and backward) takes about half a
    second on 2 CPU cores.
    """
    kwargs.setdefault("stem_widths", (16, 16, 32))
    return XResNet1d([1, 1, 1, 1], (32, 64, 128, 256), 1, **kwargs)
