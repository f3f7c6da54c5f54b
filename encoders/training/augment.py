"""ECG augmentations for training: what differs between devices, sites and countries.

Applied to a training batch of preprocessed windows ``(B, 12, T)`` on its device, never at
evaluation. Each transform is one a real recording undergoes: a different start of the
10-second window (circular shift), a different gain (amplitude scale per record), breathing
and electrode drift (baseline wander, a slow sinusoid per lead), electronic noise (Gaussian),
and leads that are missing or detached (lead dropout, zeroed as the preprocessing zeroes an
absent lead).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Augmentation:
    """Strengths of the training augmentations; zero turns one off."""

    shift: bool = True
    scale: float = 0.2
    wander: float = 0.3
    noise: float = 0.05
    lead_dropout: float = 0.1
    fs: float = 100.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """An augmented copy of the batch ``x`` (B, leads, T)."""
        batch, leads, length = x.shape

        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            values = torch.rand(*shape, generator=generator, device=x.device, dtype=x.dtype)
            return low + (high - low) * values

        out = x
        if self.shift:
            offsets = (uniform(batch) * length).long()
            index = (torch.arange(length, device=x.device) + offsets[:, None]) % length
            out = out.gather(-1, index[:, None, :].expand(batch, leads, length))
        if self.scale:
            out = out * uniform(batch, 1, 1, low=1 - self.scale, high=1 + self.scale)
        if self.wander:
            t = torch.arange(length, device=x.device, dtype=x.dtype) / self.fs
            freq = uniform(batch, 1, 1, low=0.05, high=0.5)
            phase = uniform(batch, leads, 1, high=2 * math.pi)
            amplitude = uniform(batch, 1, 1, high=self.wander)
            out = out + amplitude * torch.sin(2 * math.pi * freq * t + phase)
        if self.noise:
            noise = torch.randn(out.shape, generator=generator, device=x.device, dtype=x.dtype)
            out = out + self.noise * noise
        if self.lead_dropout:
            keep = uniform(batch, leads, 1) >= self.lead_dropout
            out = out * keep
        return out
