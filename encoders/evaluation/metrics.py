"""Multi-label metrics on score arrays, with bootstrap intervals over recordings.

``evaluate(scores, targets, labels)`` gives per-label AUROC and AUPRC (sklearn's
``roc_auc_score`` and ``average_precision_score``, the step-wise sum), their macro means over
the labels defined on the evaluated set, their micro means over all (recording, label) cells
pooled, and percentile bootstrap intervals for all of them, resampling recordings. ROC curves
are sklearn's ``roc_curve``; the resamples are computed here, all at once (see `_Ranking`).

Undefined labels: a label with one class only (no positives, or no negatives) on the evaluated
set has no AUROC or AUPRC; it is listed with its reason in ``EvaluationResult.undefined`` and
left out of the macro means (the count is reported). The micro means pool every cell,
including those of undefined labels, as ``roc_auc_score(average="micro")`` does.

Single-class resamples: in a resample where a label has one class only, that label's value is
undefined (NaN). A per-label interval is the percentile interval over the resamples in which
the label is defined (their number is reported as ``Estimate.resamples``). A macro mean of a
resample is the mean over the averaged labels defined in that resample; the number of such
partial resamples is reported as ``Mean.partial_resamples``.

Thresholds: with a validation set, each label's threshold maximises F1 on validation
(predicted positive when score >= threshold; among equal F1 the highest threshold); F1,
sensitivity, specificity and precision are then reported on the evaluated (test) set at those
thresholds. Without a validation set no threshold metric is reported: thresholds are never
chosen on the set they are evaluated on.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from encoders.evaluation.bootstrap import (
    BootstrapSettings,
    Estimate,
    estimate,
    resample_counts,
    row_chunks,
)

log = logging.getLogger(__name__)

RANKING_METRICS = ("auroc", "auprc")
THRESHOLD_METRICS = ("f1", "sensitivity", "specificity", "precision")
THRESHOLD_RULE = (
    "per label, the threshold that maximises F1 on the validation set (highest such threshold); "
    "a recording is predicted positive when its score >= threshold"
)
NO_VALIDATION = "no validation set given: thresholds are only chosen on validation, never on test"


@dataclass(frozen=True)
class Mean:
    """A mean over labels (macro) or over pooled cells (micro), with its interval."""

    estimate: Estimate
    labels: int
    excluded: tuple[str, ...] = ()
    partial_resamples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.estimate.to_dict(),
            "labels": self.labels,
            "excluded": list(self.excluded),
            "partial_resamples": self.partial_resamples,
        }


@dataclass(frozen=True)
class LabelResult:
    """One label on the evaluated set: class counts, AUROC and AUPRC, or why undefined."""

    label: str
    positives: int
    negatives: int
    auroc: Estimate
    auprc: Estimate
    undefined: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "positives": self.positives,
            "negatives": self.negatives,
            "auroc": self.auroc.to_dict(),
            "auprc": self.auprc.to_dict(),
            "undefined": self.undefined,
        }


@dataclass(frozen=True)
class Threshold:
    """A label's threshold chosen on validation, or why it has none."""

    label: str
    value: float | None
    validation_f1: float | None = None
    undefined: str | None = None


@dataclass(frozen=True)
class ThresholdMetrics:
    """A label's metrics on the evaluated set at its validation threshold."""

    threshold: Threshold
    f1: Estimate
    sensitivity: Estimate
    specificity: Estimate
    precision: Estimate

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.threshold.label,
            "threshold": self.threshold.value,
            "validation_f1": self.threshold.validation_f1,
            "undefined": self.threshold.undefined,
            **{name: getattr(self, name).to_dict() for name in THRESHOLD_METRICS},
        }


@dataclass(frozen=True)
class ThresholdResult:
    """Threshold metrics of all labels, their macro means, and how thresholds were chosen."""

    labels: list[ThresholdMetrics]
    macro: dict[str, Mean]
    validation_recordings: int
    rule: str = THRESHOLD_RULE

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "validation_recordings": self.validation_recordings,
            "macro": {name: mean.to_dict() for name, mean in self.macro.items()},
            "labels": [row.to_dict() for row in self.labels],
        }


@dataclass
class EvaluationResult:
    """Everything one evaluation reports; ``to_dict()`` is its JSON form."""

    labels: list[LabelResult]
    macro: dict[str, Mean]
    micro: dict[str, Mean]
    n_recordings: int
    bootstrap: BootstrapSettings
    thresholds: ThresholdResult | None
    thresholds_note: str | None = None
    points: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def label_names(self) -> list[str]:
        return [row.label for row in self.labels]

    @property
    def undefined(self) -> dict[str, str]:
        """Label -> why it has no AUROC/AUPRC on the evaluated set."""
        return {row.label: row.undefined for row in self.labels if row.undefined}

    def row(self, label: str) -> LabelResult:
        """The result of one label."""
        for row in self.labels:
            if row.label == label:
                return row
        raise KeyError(f"label {label!r} is not in this evaluation")

    def macro_over(self, labels: Sequence[str], metric: str = "auroc") -> Mean:
        """The macro mean of ``metric`` over some labels (e.g. a group), with its interval."""
        if metric not in self.points:
            raise ValueError(f"unknown metric {metric!r}; this result has {', '.join(self.points)}")
        index = {name: i for i, name in enumerate(self.label_names)}
        unknown = [label for label in labels if label not in index]
        if unknown:
            raise KeyError(f"labels not in this evaluation: {', '.join(unknown)}")
        columns = [index[label] for label in labels]
        return _mean(
            self.points[metric], self.samples[metric], columns, self.label_names, self.bootstrap
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_recordings": self.n_recordings,
            "n_labels": len(self.labels),
            "bootstrap": self.bootstrap.to_dict(),
            "macro": {name: mean.to_dict() for name, mean in self.macro.items()},
            "micro": {name: mean.to_dict() for name, mean in self.micro.items()},
            "undefined": self.undefined,
            "labels": [row.to_dict() for row in self.labels],
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "thresholds_note": self.thresholds_note,
        }


class _Ranking:
    """One score column sorted once (descending, ties grouped), for weighted AUROC and AP.

    Written here for the bootstrap, where it is measured to matter: every resample of a label
    comes from this one sort. ``python bench/bootstrap_metrics.py`` (2000 recordings x 60
    labels x 100 resamples, 2 CPU cores): the whole evaluation 0.35 s, against 41 s for the
    resamples alone with sklearn's ``roc_auc_score`` and ``average_precision_score`` and
    ``sample_weight`` (119x), to the same values.

    Only the cumulative weight over all tie groups is computed at full width; everything
    else is evaluated at the groups that hold a positive, which is where AUROC, average
    precision and the F1 optimum change. ``rows`` maps each score to the recording whose
    bootstrap weight it takes (for pooled, micro-averaged cells); by default score i belongs
    to recording i.
    """

    def __init__(self, scores: np.ndarray, positive: np.ndarray, rows: np.ndarray | None = None):
        order = np.argsort(-scores, kind="stable")
        ordered = scores[order]
        take = order if rows is None else rows[order]
        positive = positive[order]
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        group = np.cumsum(first) - 1
        self.take = take
        self.values = ordered[first]
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], len(ordered)]
        self.pos_take = take[positive]
        pos_group = np.unique(group[positive])
        self.pos_values = self.values[pos_group]
        # Segments of the ranking: each tie group holding a positive, and the runs between them.
        bounds = np.unique(np.r_[0, starts[pos_group], ends[pos_group]])
        self.bounds = bounds[bounds < len(ordered)]
        self.pos_segment = np.searchsorted(self.bounds, starts[pos_group])
        # Positives sorted by score: those of one tie group are adjacent.
        self.pos_starts = np.flatnonzero(np.diff(group[positive], prepend=-1))

    def _weights(self, weights: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per tie group holding a positive: positive weight, total weight, cumulative total
        weight down the ranking; and the total weight of all."""
        segments = np.add.reduceat(weights[:, self.take], self.bounds, axis=1)
        seen = np.cumsum(segments, axis=1)
        pos = weights[:, self.pos_take]
        if self.pos_starts.size < self.pos_take.size:
            pos = np.add.reduceat(pos, self.pos_starts, axis=1)
        return pos, segments[:, self.pos_segment], seen[:, self.pos_segment], seen[:, -1]

    def auroc_ap(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUROC and average precision for each row of recording weights (NaN: one class)."""
        if self.pos_take.size == 0:
            undefined = np.full(len(weights), np.nan)
            return undefined, undefined.copy()
        pos, total, seen, n_all = self._weights(weights)
        tp = np.cumsum(pos, axis=1)
        n_pos = tp[:, -1]
        n_neg = n_all - n_pos
        neg_below = n_neg[:, None] - (seen - tp)
        with np.errstate(divide="ignore", invalid="ignore"):
            auroc = (pos * (neg_below + 0.5 * (total - pos))).sum(axis=1) / (n_pos * n_neg)
            ap = (pos * tp / np.maximum(seen, np.finfo(float).tiny)).sum(axis=1) / n_pos
        defined = (n_pos > 0) & (n_neg > 0)
        return np.where(defined, auroc, np.nan), np.where(defined, ap, np.nan)

    def best_f1(self) -> tuple[float, float]:
        """(threshold, F1) maximising F1 with unit weights; the highest threshold on ties.

        F1 = 2 TP / (TP + FP + P) only rises at groups holding a positive, so those are the
        candidate thresholds.
        """
        pos, _, seen, _ = self._weights(np.ones((1, self.take.size)))
        tp = np.cumsum(pos[0])
        f1 = 2 * tp / (seen[0] + tp[-1])
        best = int(np.argmax(f1))
        return float(self.pos_values[best]), float(f1[best])


def _check(scores: Any, targets: Any, labels: Sequence[str], what: str) -> tuple[np.ndarray, ...]:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"{what}: scores {scores.shape} and targets {targets.shape} must both be "
            "(recordings, labels)"
        )
    if scores.shape[0] == 0:
        raise ValueError(f"{what}: no recordings")
    if scores.shape[1] != len(labels):
        raise ValueError(f"{what}: {scores.shape[1]} label columns but {len(labels)} labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{what}: label names are not unique")
    if not np.isfinite(scores).all():
        bad = np.argwhere(~np.isfinite(scores))[0]
        raise ValueError(
            f"{what}: the score of recording {bad[0]}, label {labels[bad[1]]!r}, is not finite"
        )
    if not np.isin(targets, (0, 1)).all():
        raise ValueError(f"{what}: targets must be 0 or 1")
    return scores, targets.astype(bool)


def _single_class(positives: int, negatives: int, where: str) -> str | None:
    if positives == 0:
        return f"no positives{where}"
    if negatives == 0:
        return f"no negatives{where}"
    return None


def _mean(
    points: np.ndarray,
    samples: np.ndarray,
    columns: Sequence[int],
    labels: Sequence[str],
    settings: BootstrapSettings,
) -> Mean:
    averaged = [c for c in columns if np.isfinite(points[c])]
    excluded = tuple(labels[c] for c in columns if not np.isfinite(points[c]))
    if not averaged:
        return Mean(Estimate(None), 0, excluded)
    part = samples[:, averaged]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples stay NaN
        means = np.nanmean(part, axis=1)
    partial = int(np.isnan(part).any(axis=1).sum())
    point = float(points[averaged].mean())
    return Mean(estimate(point, means, settings), len(averaged), excluded, partial)


def _ranking_metrics(
    scores: np.ndarray, targets: np.ndarray, counts: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-label points (C,) and resamples (B, C) of AUROC and AUPRC."""
    n, c = scores.shape
    points = {m: np.full(c, np.nan) for m in RANKING_METRICS}
    samples = {m: np.full((counts.shape[0], c), np.nan) for m in RANKING_METRICS}
    for j in range(c):
        if _one_class(targets[:, j]):
            continue
        points["auroc"][j] = roc_auc_score(targets[:, j], scores[:, j])
        points["auprc"][j] = average_precision_score(targets[:, j], scores[:, j])
        ranking = _Ranking(scores[:, j], targets[:, j])
        for rows in row_chunks(counts.shape[0], n):
            samples["auroc"][rows, j], samples["auprc"][rows, j] = ranking.auroc_ap(counts[rows])
    return points, samples


def _micro(
    scores: np.ndarray, targets: np.ndarray, counts: np.ndarray, settings: BootstrapSettings
) -> dict[str, Mean]:
    n, c = scores.shape
    auroc = ap = np.nan
    boot = np.full((2, counts.shape[0]), np.nan)
    if not _one_class(targets):
        auroc = roc_auc_score(targets, scores, average="micro")
        ap = average_precision_score(targets, scores, average="micro")
        ranking = _Ranking(scores.ravel(), targets.ravel(), np.repeat(np.arange(n), c))
        for rows in row_chunks(counts.shape[0], n * c):
            boot[0, rows], boot[1, rows] = ranking.auroc_ap(counts[rows])
    return {
        "auroc": Mean(estimate(auroc, boot[0], settings), c),
        "auprc": Mean(estimate(ap, boot[1], settings), c),
    }


def _one_class(targets: np.ndarray) -> bool:
    return bool(targets.all() or not targets.any())


def roc_points(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """One label's ROC curve: false- and true-positive rates at each distinct score, from (0, 0).

    The trapezoid area under these points is the AUROC (ties count one half).
    """
    targets = np.asarray(targets, dtype=bool)
    if _one_class(targets):
        raise ValueError("a ROC curve needs both classes")
    fpr, tpr, _ = roc_curve(targets, np.asarray(scores, dtype=np.float64), drop_intermediate=False)
    return fpr, tpr


def choose_thresholds(scores: Any, targets: Any, labels: Sequence[str]) -> list[Threshold]:
    """Per label, the threshold maximising F1 on these (validation) arrays.

    Labels with one class only on validation get no threshold (``value`` None, with reason).
    """
    scores, targets = _check(scores, targets, labels, "validation")
    thresholds = []
    for j, label in enumerate(labels):
        positives = int(targets[:, j].sum())
        reason = _single_class(positives, len(targets) - positives, " in validation")
        if reason:
            thresholds.append(Threshold(label, None, undefined=reason))
            continue
        value, f1 = _Ranking(scores[:, j], targets[:, j]).best_f1()
        thresholds.append(Threshold(label, value, f1))
    return thresholds


def _threshold_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    thresholds: list[Threshold],
    counts: np.ndarray,
    validation_recordings: int,
    settings: BootstrapSettings,
) -> tuple[ThresholdResult, dict[str, np.ndarray], dict[str, np.ndarray]]:
    values = np.array([np.nan if t.value is None else t.value for t in thresholds])
    has = np.isfinite(values)
    predicted = scores >= np.where(has, values, np.inf)
    cells = {
        "tp": targets & predicted,
        "fp": ~targets & predicted,
        "fn": targets & ~predicted,
        "tn": ~targets & ~predicted,
    }
    weights = np.vstack([np.ones((1, len(scores))), counts])
    tally = {name: weights @ cell.astype(np.float64) for name, cell in cells.items()}
    tp, fp, fn, tn = tally["tp"], tally["fp"], tally["fn"], tally["tn"]
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics = {
            "f1": 2 * tp / (2 * tp + fp + fn),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
        }
    metrics = {name: np.where(has, value, np.nan) for name, value in metrics.items()}
    points = {name: value[0] for name, value in metrics.items()}
    samples = {name: value[1:] for name, value in metrics.items()}
    rows = [
        ThresholdMetrics(
            threshold,
            *(estimate(points[m][j], samples[m][:, j], settings) for m in THRESHOLD_METRICS),
        )
        for j, threshold in enumerate(thresholds)
    ]
    columns = range(len(labels))
    macro = {m: _mean(points[m], samples[m], columns, labels, settings) for m in THRESHOLD_METRICS}
    return ThresholdResult(rows, macro, validation_recordings), points, samples


def evaluate(
    scores: Any,
    targets: Any,
    labels: Sequence[str],
    *,
    validation: tuple[Any, Any] | None = None,
    bootstrap: BootstrapSettings | None = None,
) -> EvaluationResult:
    """Evaluate (recordings, labels) scores against 0/1 targets; see the module docstring.

    ``validation`` is (scores, targets) of a validation set with the same label columns, used
    only to choose per-label thresholds.
    """
    labels = list(labels)
    settings = bootstrap or BootstrapSettings()
    scores, targets = _check(scores, targets, labels, "evaluated set")
    started = time.perf_counter()
    counts = resample_counts(len(scores), settings)
    points, samples = _ranking_metrics(scores, targets, counts)
    positives = targets.sum(axis=0)
    rows = [
        LabelResult(
            label,
            int(positives[j]),
            len(targets) - int(positives[j]),
            estimate(points["auroc"][j], samples["auroc"][:, j], settings),
            estimate(points["auprc"][j], samples["auprc"][:, j], settings),
            _single_class(int(positives[j]), len(targets) - int(positives[j]), ""),
        )
        for j, label in enumerate(labels)
    ]
    columns = range(len(labels))
    macro = {m: _mean(points[m], samples[m], columns, labels, settings) for m in RANKING_METRICS}
    micro = _micro(scores, targets, counts, settings)
    threshold_result: ThresholdResult | None = None
    note: str | None = NO_VALIDATION
    if validation is not None:
        val_scores, val_targets = validation
        thresholds = choose_thresholds(val_scores, val_targets, labels)
        threshold_result, t_points, t_samples = _threshold_metrics(
            scores, targets, labels, thresholds, counts, len(np.asarray(val_scores)), settings
        )
        points.update(t_points)
        samples.update(t_samples)
        note = None
    log.debug(
        "evaluated %d recordings x %d labels with %d resamples in %.2f s",
        len(scores),
        len(labels),
        settings.resamples,
        time.perf_counter() - started,
    )
    return EvaluationResult(
        rows, macro, micro, len(scores), settings, threshold_result, note, points, samples
    )
