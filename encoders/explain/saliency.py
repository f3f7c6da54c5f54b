"""Integrated-gradients attribution of one label's logit to a 12-lead ECG window.

The method is integrated gradients (Sundararajan et al., 2017): the attribution of input sample
``x[l, t]`` is ``(x - b)[l, t]`` times the gradient of the label's logit averaged along the
straight path from a baseline ``b`` to ``x``. It was chosen over SmoothGrad x input because it
is deterministic and *complete*: the attributions add up to ``logit(x) - logit(b)``, so a
lead's or a window's share of the attribution is a share of a real change in the score, and the
completeness error (`Saliency.delta`) says whether the integral has converged.

Defaults: a zero baseline (for z-scored leads, the flat isoelectric line at the lead's mean),
64 steps of the trapezoid rule (65 points on the path, including both ends, whose logits give
``logit(x)`` and ``logit(b)`` without extra passes), 16 path points per forward/backward pass.
``baseline="smoothed"`` uses a 1 s moving average of ``x`` instead, which keeps the slow
baseline and attributes only the waveform detail (P, QRS, T). Missing leads (``lead_mask``
False) are held at their value along the whole path, so their attribution is exactly zero and
completeness still holds.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knowledge.leads import STANDARD_LEADS

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""A model as the explainer sees it: ECGs ``(B, 12, T)`` -> label logits ``(B, C)``."""

BaselineKind = Literal["zero", "smoothed"]

N_LEADS = len(STANDARD_LEADS)
DEFAULT_STEPS = 64
DEFAULT_BATCH_SIZE = 16
SMOOTHED_BASELINE_S = 1.0


@dataclass(frozen=True, eq=False)
class Saliency:
    """The attribution of one label's logit to one ECG window.

    ``attribution`` is ``(12, T)`` float32 in the standard lead order; its sum equals
    ``logit - baseline_logit`` up to `delta`. ``lead_mask`` is ``(12,)`` bool (False: missing).
    """

    attribution: np.ndarray
    lead_mask: np.ndarray
    label_index: int
    logit: float
    baseline_logit: float
    method: str

    @property
    def delta(self) -> float:
        """Completeness error: the attributions' sum minus ``logit - baseline_logit``."""
        return float(self.attribution.sum(dtype=np.float64)) - (self.logit - self.baseline_logit)

    @property
    def lead_importance(self) -> np.ndarray:
        """``(12,)`` share of the total absolute attribution per lead (sums to 1, or all 0)."""
        mass = np.abs(self.attribution).sum(axis=-1, dtype=np.float64)
        total = mass.sum()
        return mass / total if total > 0 else mass

    @property
    def lead_contribution(self) -> np.ndarray:
        """``(12,)`` signed attribution per lead: how far each lead moves the logit."""
        return self.attribution.sum(axis=-1, dtype=np.float64)


def as_ecg_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a detached float32 ``(12, T)`` tensor on its own device.

    Raises ``ValueError`` when ``x`` is not ``(12, T)`` in the standard lead order
    (I, II, III, aVR, aVL, aVF, V1-V6) or holds a non-finite value.
    """
    tensor = torch.as_tensor(x)
    if tensor.ndim != 2 or tensor.shape[0] != N_LEADS or tensor.shape[1] < 1:
        raise ValueError(
            f"x must be one ECG window of shape (12, T) in the lead order "
            f"{', '.join(STANDARD_LEADS)}; got shape {tuple(tensor.shape)}"
        )
    tensor = tensor.detach().to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError("x holds non-finite values (NaN or inf); preprocess the record first")
    return tensor


def as_lead_mask(
    lead_mask: torch.Tensor | np.ndarray | None, device: torch.device | None = None
) -> torch.Tensor:
    """A ``(12,)`` bool tensor (True: lead present); all True when ``lead_mask`` is None."""
    if lead_mask is None:
        return torch.ones(N_LEADS, dtype=torch.bool, device=device)
    mask = torch.as_tensor(lead_mask, device=device)
    if mask.shape != (N_LEADS,):
        raise ValueError(f"lead_mask must have shape (12,), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not torch.isin(mask, torch.tensor([0, 1], device=mask.device)).all():
            raise ValueError("lead_mask must be boolean (or 0/1), one value per lead")
        mask = mask.to(torch.bool)
    if not mask.any():
        raise ValueError("lead_mask marks every lead missing; nothing to explain")
    return mask


def smoothed_baseline(
    x: torch.Tensor, fs: float, window_s: float = SMOOTHED_BASELINE_S
) -> torch.Tensor:
    """A moving average of each lead of ``x`` ``(12, T)`` over ``window_s`` (edges repeated)."""
    width = max(1, round(window_s * fs)) | 1  # odd, so the average is centred
    padded = F.pad(x[None], (width // 2, width // 2), mode="replicate")
    return F.avg_pool1d(padded, width, stride=1)[0]


def integrated_gradients(
    score_fn: ScoreFn,
    x: torch.Tensor | np.ndarray,
    label_index: int,
    *,
    lead_mask: torch.Tensor | np.ndarray | None = None,
    baseline: BaselineKind = "zero",
    fs: float = 100.0,
    n_steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Saliency:
    """Attribute the logit of label ``label_index`` for ECG ``x`` ``(12, T)`` to its samples.

    ``score_fn`` maps ``(B, 12, T)`` to logits ``(B, C)`` and must be differentiable in its input
    (an ``nn.Module`` must be in eval mode: in training mode BatchNorm would mix the path points
    of a batch). ``x`` stays on its device, so a model on a GPU takes ``x`` on that GPU. ``fs``
    (Hz) sizes the smoothed baseline. See the module docstring for the method and its defaults.
    Raises ``IndexError`` when ``label_index`` is outside the model's ``C`` labels and
    ``ValueError`` for a wrong shape of ``x``, ``lead_mask`` or the model's output.
    """
    if isinstance(score_fn, nn.Module) and score_fn.training:
        raise ValueError("score_fn is an nn.Module in training mode; call .eval() on it first")
    if n_steps < 1 or batch_size < 1:
        raise ValueError(f"n_steps and batch_size must be >= 1, got {n_steps} and {batch_size}")
    if not fs > 0:
        raise ValueError(f"fs must be a positive rate in Hz, got {fs!r}")
    label_index = operator.index(label_index)  # TypeError for a float or other non-integer
    if label_index < 0:
        raise IndexError(f"label_index must be >= 0, got {label_index}")
    ecg = as_ecg_tensor(x)
    mask = as_lead_mask(lead_mask, ecg.device)
    if baseline == "zero":
        start = torch.zeros_like(ecg)
    elif baseline == "smoothed":
        start = smoothed_baseline(ecg, fs)
    else:
        raise ValueError(f"baseline must be 'zero' or 'smoothed', got {baseline!r}")
    start = torch.where(mask[:, None], start, ecg)  # missing leads do not move along the path
    step = ecg - start

    alphas = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    weights = torch.full_like(alphas, 1.0 / n_steps)
    weights[[0, -1]] /= 2
    grad_sum = torch.zeros_like(ecg, dtype=torch.float64)
    logits = []
    with torch.enable_grad():
        for alpha, weight in zip(alphas.split(batch_size), weights.split(batch_size), strict=True):
            path = start + alpha.to(ecg)[:, None, None] * step
            path.requires_grad_(True)
            scores = _label_scores(score_fn, path, label_index)
            (grads,) = torch.autograd.grad(scores.sum(), path, materialize_grads=True)
            grad_sum += (grads.double() * weight.to(grads.device)[:, None, None]).sum(dim=0)
            logits.append(scores.detach().double().cpu())
    path_logits = torch.cat(logits)
    attribution = (step.double() * grad_sum).float().cpu().numpy()
    return Saliency(
        attribution=attribution,
        lead_mask=mask.cpu().numpy(),
        label_index=label_index,
        logit=float(path_logits[-1]),
        baseline_logit=float(path_logits[0]),
        method=f"integrated gradients ({baseline} baseline, {n_steps} steps)",
    )


def _label_scores(score_fn: ScoreFn, path: torch.Tensor, label_index: int) -> torch.Tensor:
    """The logits ``(B,)`` of one label on a batch of path points, checking the model's output."""
    out = score_fn(path)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != path.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"score_fn must return logits of shape ({path.shape[0]}, C) for {path.shape[0]} "
            f"ECGs, got {shape}"
        )
    if label_index >= out.shape[1]:
        raise IndexError(f"label_index {label_index} is out of range for {out.shape[1]} labels")
    scores = out[:, label_index]
    if not scores.requires_grad:
        raise ValueError(
            "score_fn's logits do not depend differentiably on its input "
            "(is it detached, or run under torch.no_grad / inference_mode?)"
        )
    return scores
