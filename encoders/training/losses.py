"""Multi-label, multi-positive alignment between ECG embeddings and label vectors.

- Per-label sigmoid: binary cross-entropy on each (recording, label) logit, as multi-label
  targets need (several diagnoses per recording, many absent).
- UniCL-style contrastive term on temperature-scaled cosines between recordings and labels,
  in both directions: each recording's positives are its labels, and each label's positives
  are every recording in the batch that has it, so recordings sharing a label are positives
  together. Vectorised; under DDP the recordings of all ranks take part.

A NaN target is unknown (the record's dataset never reports that label): both terms leave the
pair out, instead of counting it as a negative.

- Report term (the reference's report branch, with cached report vectors): the same
  contrastive loss between recordings and the distinct reports of the batch, recordings with
  the same report text being positives together; records without a report take no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from encoders.training import recipe


@dataclass(frozen=True)
class LossWeights:
    bce: float = recipe.BCE_WEIGHT
    contrastive: float = recipe.CONTRASTIVE_WEIGHT
    temperature: float = recipe.TEMPERATURE
    report: float = 0.0
    """Weight of the report term (0: trained against label vectors only)."""


_UNKNOWN_LOGIT = -1e4


def _multi_positive_ce(logits: torch.Tensor, targets: torch.Tensor, dim: int) -> torch.Tensor:
    """Cross-entropy against the uniform distribution over positives, along ``dim``.

    Unknown (NaN) pairs take no part: they leave the softmax and count as no positive.
    """
    known = ~torch.isnan(targets)
    targets = torch.nan_to_num(targets, nan=0.0)
    positives = targets.sum(dim)
    has_positive = positives > 0
    if not has_positive.any():
        return logits.sum() * 0.0
    log_probs = F.log_softmax(logits.masked_fill(~known, _UNKNOWN_LOGIT), dim=dim)
    per_item = -(targets * log_probs).sum(dim) / positives.clamp(min=1)
    return per_item[has_positive].mean()


def contrastive_loss(
    ecg: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric multi-positive contrastive loss between recordings (B, D) and labels (C, D)."""
    logits = F.normalize(ecg, dim=-1) @ F.normalize(labels, dim=-1).T / temperature
    to_labels = _multi_positive_ce(logits, targets, dim=1)
    to_recordings = _multi_positive_ce(logits, targets, dim=0)
    return (to_labels + to_recordings) / 2


def report_loss(
    ecg: torch.Tensor, reports: torch.Tensor, report_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Contrastive loss between recordings (B, D) and the reports they have (rows of
    ``reports`` (R, D), -1 for none); recordings that share a report text are positives."""
    has_report = report_ids >= 0
    if not has_report.any():
        return ecg.sum() * 0.0
    present, which = torch.unique(report_ids[has_report], return_inverse=True)
    targets = F.one_hot(which, len(present)).to(ecg.dtype)
    return contrastive_loss(ecg[has_report], reports[present], targets, temperature)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over DDP ranks, keeping this rank's gradient (open_clip style)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    gathered[dist.get_rank()] = tensor
    return torch.cat(gathered)


class AlignmentLoss(torch.nn.Module):
    """Label terms, plus the report term when built with report vectors (R, D)."""

    reports: torch.Tensor | None

    def __init__(
        self, weights: LossWeights = LossWeights(), reports: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if weights.report > 0 and reports is None:
            raise ValueError("a report weight needs the report vectors")
        self.weights = weights
        self.register_buffer("reports", None if reports is None else reports.detach().float())

    def forward(
        self,
        logits: torch.Tensor,
        ecg: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor,
        report_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "bce", "contrastive", "report"}`` for one batch; ``report_ids`` (B,) are
        the rows of the report vectors of the batch's recordings (-1: no report)."""
        known = ~torch.isnan(targets)
        bce = (
            F.binary_cross_entropy_with_logits(logits.float()[known], targets[known])
            if known.any()
            else logits.sum() * 0.0
        )
        contrastive = (
            contrastive_loss(
                gather_with_grad(ecg.float()),
                labels.float(),
                gather_with_grad(targets),
                self.weights.temperature,
            )
            if self.weights.contrastive > 0
            else bce.new_zeros(())
        )
        report = self._report(ecg, report_ids) if self.weights.report > 0 else bce.new_zeros(())
        loss = (
            self.weights.bce * bce
            + self.weights.contrastive * contrastive
            + self.weights.report * report
        )
        return {
            "loss": loss,
            "bce": bce.detach(),
            "contrastive": contrastive.detach(),
            "report": report.detach(),
        }

    def _report(self, ecg: torch.Tensor, report_ids: torch.Tensor | None) -> torch.Tensor:
        if self.reports is None or report_ids is None:
            raise ValueError("the report term needs report vectors and each recording's report_ids")
        return report_loss(
            gather_with_grad(ecg.float()),
            self.reports,
            gather_with_grad(report_ids),
            self.weights.temperature,
        )
