"""PNG figures: ROC curves, per-label AUROC bars with intervals, label-similarity heatmaps.

Figures are built with ``matplotlib.figure.Figure`` and written by its Agg canvas, so no
screen and no global pyplot state are involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from encoders.evaluation.metrics import EvaluationResult, roc_points
from encoders.evaluation.report import Predictions


def _save(figure: Figure, path: Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png", bbox_inches="tight")
    return path


def _select(
    labels: Sequence[str], targets: np.ndarray, chosen: Sequence[str] | None, top_k: int | None
) -> list[str]:
    """The labels to draw: those given, else the ``top_k`` with most positives (both classes)."""
    if chosen is not None:
        unknown = sorted(set(chosen) - set(labels))
        if unknown:
            raise KeyError(f"labels not in the predictions: {', '.join(unknown)}")
        return list(chosen)
    positives = targets.sum(axis=0)
    drawable = [j for j in range(len(labels)) if 0 < positives[j] < len(targets)]
    drawable.sort(key=lambda j: -positives[j])
    return [labels[j] for j in drawable[:top_k]]


def plot_roc_curves(
    path: Path,
    conditions: Mapping[str, Predictions],
    *,
    labels: Sequence[str] | None = None,
    top_k: int | None = 10,
) -> Path:
    """ROC curves, one panel per condition and a curve per label (given, or top-k by positives).

    All conditions must hold the same recordings and labels; a label with one class only has
    no ROC curve and is named in the panel instead.
    """
    if not conditions:
        raise ValueError("give at least one condition to plot")
    first = next(iter(conditions.values()))
    for name, predictions in conditions.items():
        if (predictions.record_ids, predictions.labels) != (first.record_ids, first.labels):
            raise ValueError(f"condition {name!r} has other recordings or labels than the first")
    drawn = _select(first.labels, first.targets, labels, top_k)
    figure = Figure(figsize=(5.0 * len(conditions), 5.0))
    axes = figure.subplots(1, len(conditions), squeeze=False)[0]
    for ax, (name, predictions) in zip(axes, conditions.items(), strict=True):
        single_class = []
        for label in drawn:
            j = predictions.labels.index(label)
            target = predictions.targets[:, j]
            if target.min() == target.max():
                single_class.append(label)
                continue
            fpr, tpr = roc_points(predictions.scores[:, j], target)
            area = float(np.trapezoid(tpr, fpr))
            ax.plot(fpr, tpr, linewidth=1.2, label=f"{label} ({area:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
        ax.set_title(name)
        if len(single_class) < len(drawn):
            ax.legend(loc="lower right", fontsize="x-small", title="label (AUROC)")
        if single_class:
            note = f"no curve (one class only): {', '.join(single_class)}"
            ax.text(0.02, 0.98, note, va="top", fontsize="x-small", wrap=True)
    chosen = f" (top {len(drawn)} of {len(first.labels)} by positives)" if labels is None else ""
    figure.suptitle(f"ROC curves{chosen}, {len(first.record_ids)} recordings")
    return _save(figure, path)


def plot_auroc_bars(
    path: Path,
    conditions: Mapping[str, EvaluationResult],
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Per-label AUROC with interval error bars, one bar per condition; undefined ones marked."""
    if not conditions:
        raise ValueError("give at least one condition to plot")
    first = next(iter(conditions.values()))
    names = list(labels) if labels is not None else first.label_names
    count = len(conditions)
    height = 0.8 / count
    figure = Figure(figsize=(8.0, 1.5 + 0.22 * len(names) * max(1.0, 0.6 * count)))
    ax = figure.subplots()
    ticks = np.arange(len(names))
    for k, (name, result) in enumerate(conditions.items()):
        rows = [result.row(label) for label in names]
        y = ticks - 0.4 + height * (k + 0.5)
        value = np.array([np.nan if r.auroc.value is None else r.auroc.value for r in rows])
        low = np.array([np.nan if r.auroc.low is None else r.auroc.low for r in rows])
        high = np.array([np.nan if r.auroc.high is None else r.auroc.high for r in rows])
        errors = np.nan_to_num(np.vstack([value - low, high - value]))
        ax.barh(y, np.nan_to_num(value), height, xerr=errors, label=name, capsize=2)
    for tick, label in zip(ticks, names, strict=True):
        reason = first.row(label).undefined
        if reason:
            ax.text(0.01, float(tick), f"undefined: {reason}", va="center", fontsize="x-small")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(len(names) - 0.5, -0.5), xlabel="AUROC")
    ax.set_yticks(ticks, names, fontsize="small")
    confidence = first.bootstrap.confidence
    ax.set_title(f"Per-label AUROC with {confidence:.0%} bootstrap intervals")
    ax.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_similarity_heatmap(
    path: Path, similarity: np.ndarray, names: Sequence[str], *, title: str
) -> Path:
    """A labels x labels cosine heatmap, in the order given."""
    count = len(names)
    side = min(4.0 + 0.16 * count, 40.0)
    figure = Figure(figsize=(side + 1.5, side))
    ax = figure.subplots()
    off_diagonal = similarity[~np.eye(count, dtype=bool)]
    low = float(off_diagonal.min()) if off_diagonal.size else 0.0
    image = ax.imshow(similarity, vmin=min(low, 0.999), vmax=1.0, cmap="viridis")
    size = max(3.0, min(9.0, 600.0 / max(count, 1)))
    ax.set_xticks(np.arange(count), names, rotation=90, fontsize=size)
    ax.set_yticks(np.arange(count), names, fontsize=size)
    ax.set_title(title)
    figure.colorbar(image, ax=ax, fraction=0.04, label="cosine similarity")
    return _save(figure, path)
