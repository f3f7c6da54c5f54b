"""The explanation of one diagnosis score for one recording, and `explain`, which builds it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from encoders.explain.knowledge_match import DEFAULT_TOP_LEADS, KnowledgeMatch, match_knowledge
from encoders.explain.regions import DEFAULT_REGIONS, Region, time_regions
from encoders.explain.saliency import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STEPS,
    BaselineKind,
    ScoreFn,
    integrated_gradients,
)
from knowledge.leads import STANDARD_LEADS
from knowledge.schema import DiagnosisKnowledge

_SHOWN_LEADS = 5


@dataclass(frozen=True, eq=False)
class Explanation:
    """Why a model gave label ``label`` the score it did on one ECG window.

    ``lead_importance``: each lead's share of the absolute attribution (0 for missing leads);
    ``lead_contribution``: each lead's signed attribution (how far it moves the logit);
    ``ranking``: the present leads, most important first; ``regions``: the windows of highest
    attribution; ``knowledge``: the diagnosis's knowledge record matched against the ranking
    (None without a record); ``measured_criteria``: the record's criteria checked against the
    recording, one line each; ``completeness_error``: the attributions' sum minus
    ``logit - baseline_logit``. ``attribution`` ``(12, T)`` is kept for plots, not in `to_dict`.
    """

    label: str
    label_index: int
    logit: float
    probability: float
    baseline_logit: float
    completeness_error: float
    method: str
    fs: float
    n_samples: int
    lead_importance: dict[str, float]
    lead_contribution: dict[str, float]
    ranking: tuple[str, ...]
    missing_leads: tuple[str, ...]
    regions: tuple[Region, ...]
    knowledge: KnowledgeMatch | None
    attribution: np.ndarray = field(repr=False)
    measured_criteria: tuple[str, ...] = ()
    """What the knowledge states, what the recording measures, and what each adds to the logit
    when scored with measured criteria (`encoders.inference.criteria.describe_criteria`)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain dicts, lists/tuples and numbers for ``json.dumps``, without the
        ``attribution`` array."""
        data = asdict(self)
        del data["attribution"]
        return data

    def text(self) -> str:
        """A short plain-text explanation, several lines."""
        lines = [
            f"{self.label}: probability {self.probability:.2f} (logit {self.logit:.2f})",
            f"Method: {self.method}; the attributions add up to the logit's change from the "
            f"baseline ({self.baseline_logit:.2f} -> {self.logit:.2f}) within "
            f"{abs(self.completeness_error):.2g}.",
            "Most important leads: "
            + (
                ", ".join(
                    f"{lead} {self.lead_importance[lead]:.0%}"
                    for lead in self.ranking[:_SHOWN_LEADS]
                    if self.lead_importance[lead] > 0
                )
                or "none (the attribution is zero)"
            ),
        ]
        if self.missing_leads:
            lines.append(f"Missing leads (no importance): {', '.join(self.missing_leads)}")
        if self.knowledge is not None:
            lines.extend(_knowledge_lines(self.knowledge))
        if self.measured_criteria:
            lines.append("Measured criteria (added to the logit when scored with them):")
            lines.extend(f"  {line}" for line in self.measured_criteria)
        if self.regions:
            lines.append("Time regions of highest attribution:")
            lines.extend(
                f"  {rank}. {r.start_s:.2f}-{r.end_s:.2f} s: {r.share:.0%} of the attribution, "
                f"{'raises' if r.contribution >= 0 else 'lowers'} the score; mostly "
                f"{', '.join(r.lead_names)}"
                for rank, r in enumerate(self.regions, 1)
            )
        else:
            lines.append("No time region stands out: the attribution is zero.")
        if self.knowledge is not None:
            lines.append(f"Diagnostic criteria of {self.knowledge.diagnosis} (knowledge record):")
            lines.extend(f"  {i}. {c}" for i, c in enumerate(self.knowledge.criteria, 1))
            lines.append(
                "The attribution shows which parts of the recording moved the score, "
                "not that a criterion is met."
            )
        return "\n".join(lines)


def _knowledge_lines(match: KnowledgeMatch) -> list[str]:
    top = f"the {len(match.top_leads)} most important leads were {', '.join(match.top_leads)}"
    if not match.named_leads:
        return [f"Knowledge: the record of {match.diagnosis} names no leads; {top}."]
    lines = [
        f"Knowledge: the record of {match.diagnosis} names {', '.join(match.named_leads)}; {top} "
        f"({len(match.common_leads)} in common). {match.named_share:.0%} of the attribution lies "
        f"on the named leads ({match.even_share:.0%} if spread evenly over the present leads)."
    ]
    if match.missing_named_leads:
        lines.append(f"  Named leads missing here: {', '.join(match.missing_named_leads)}")
    lines.extend(
        f"  {group.name} ({', '.join(group.leads)}): "
        + (
            f"{', '.join(group.common)} among the most important"
            if group.common
            else "none among the most important"
        )
        for group in match.groups
    )
    return lines


def explain(
    score_fn: ScoreFn,
    x: torch.Tensor | np.ndarray,
    label_index: int,
    label_name: str,
    record: DiagnosisKnowledge | None = None,
    fs: float = 100.0,
    lead_mask: torch.Tensor | np.ndarray | None = None,
    *,
    baseline: BaselineKind = "zero",
    n_steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_regions: int = DEFAULT_REGIONS,
    top_leads: int = DEFAULT_TOP_LEADS,
) -> Explanation:
    """Explain the score of label ``label_index`` (named ``label_name``) for ECG ``x`` ``(12, T)``.

    ``score_fn`` maps ``(B, 12, T)`` to logits ``(B, C)`` (see
    `encoders.explain.saliency.integrated_gradients` for the method and ``baseline``,
    ``n_steps``, ``batch_size``); ``record`` is the diagnosis's knowledge record, whose criteria
    and leads are set against the ``top_leads`` most important leads; ``lead_mask`` ``(12,)``
    marks present leads; ``n_regions`` is the most time regions reported.
    """
    saliency = integrated_gradients(
        score_fn,
        x,
        label_index,
        lead_mask=lead_mask,
        baseline=baseline,
        fs=fs,
        n_steps=n_steps,
        batch_size=batch_size,
    )
    importance = dict(zip(STANDARD_LEADS, map(float, saliency.lead_importance), strict=True))
    present = [lead for lead, ok in zip(STANDARD_LEADS, saliency.lead_mask, strict=True) if ok]
    ranking = tuple(sorted(present, key=lambda lead: -importance[lead]))
    return Explanation(
        label=label_name,
        label_index=saliency.label_index,
        logit=saliency.logit,
        probability=_sigmoid(saliency.logit),
        baseline_logit=saliency.baseline_logit,
        completeness_error=saliency.delta,
        method=saliency.method,
        fs=float(fs),
        n_samples=saliency.attribution.shape[-1],
        lead_importance=importance,
        lead_contribution=dict(
            zip(STANDARD_LEADS, map(float, saliency.lead_contribution), strict=True)
        ),
        ranking=ranking,
        missing_leads=tuple(lead for lead in STANDARD_LEADS if lead not in present),
        regions=time_regions(saliency.attribution, fs, k=n_regions),
        knowledge=(
            match_knowledge(record, importance, ranking, top_leads=top_leads)
            if record is not None
            else None
        ),
        attribution=saliency.attribution,
    )


def _sigmoid(logit: float) -> float:
    """``1 / (1 + exp(-logit))`` without overflow for large negative logits."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)
