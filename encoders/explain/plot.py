"""A 12-lead plot of an explanation: signals, saliency, important regions, lead importance.

Drawn with matplotlib's object-oriented API on an Agg canvas, so it needs no display and leaves
pyplot's global state alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator
from scipy.ndimage import uniform_filter1d

from encoders.explain.explanation import Explanation
from encoders.explain.regions import DEFAULT_SMOOTH_S
from encoders.explain.saliency import as_ecg_tensor
from knowledge.leads import STANDARD_LEADS

_REGION_COLOUR = "#f2b134"
_SALIENCY_COLOUR = "#d95f02"
_MISSING_COLOUR = "#9a9a9a"


def plot_explanation(
    explanation: Explanation,
    x: torch.Tensor | np.ndarray,
    out_png: str | Path,
    fs: float | None = None,
    *,
    dpi: int = 100,
) -> Path:
    """Write a PNG of ECG ``x`` ``(12, T)`` with ``explanation`` drawn over it; return its path.

    One row per lead (time in seconds): the trace, coloured from grey to red by the lead's
    importance; the lead's absolute attribution, smoothed, as an orange band at the bottom of
    its row; the time regions shaded and numbered; a bar with the lead's importance to the
    right. ``fs`` defaults to the rate the explanation was made at and must agree with it.
    """
    signal = as_ecg_tensor(x).cpu().numpy()
    fs = explanation.fs if fs is None else float(fs)
    if fs != explanation.fs:
        raise ValueError(f"fs={fs:g} Hz, but the explanation was made at {explanation.fs:g} Hz")
    if signal.shape[-1] != explanation.n_samples:
        raise ValueError(
            f"x has {signal.shape[-1]} samples, but the explanation covers {explanation.n_samples}"
        )
    out_png = Path(out_png)
    if not out_png.parent.is_dir():
        raise FileNotFoundError(f"folder of {out_png} does not exist")

    time = np.arange(signal.shape[-1]) / fs
    saliency = uniform_filter1d(
        np.abs(explanation.attribution), max(1, round(DEFAULT_SMOOTH_S * fs)), axis=-1
    )
    saliency /= max(float(saliency.max()), np.finfo(np.float32).tiny)
    present = [v for lead, v in explanation.lead_importance.items() if lead in explanation.ranking]
    scale = (min(present), max(present))

    figure = Figure(figsize=(14, 17), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(STANDARD_LEADS), 2, width_ratios=(12, 1))
    first = figure.add_subplot(grid[0, 0])
    axis = first
    for row, lead in enumerate(STANDARD_LEADS):
        axis = first if row == 0 else figure.add_subplot(grid[row, 0], sharex=first)
        _draw_lead(axis, explanation, lead, time, signal[row], saliency[row], scale)
        if row < len(STANDARD_LEADS) - 1:
            axis.tick_params(labelbottom=False)
        _draw_importance(figure.add_subplot(grid[row, 1]), explanation, lead, scale)
    axis.set_xlabel("time (s)")  # the bottom row
    first.set_xlim(0, time[-1] + 1 / fs)
    first.xaxis.set_major_locator(MultipleLocator(1.0))
    first.xaxis.set_minor_locator(MultipleLocator(0.2))
    for rank, region in enumerate(explanation.regions, 1):
        first.annotate(
            str(rank),
            ((region.start_s + region.end_s) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontweight="bold",
        )
    title = f"{explanation.label}: probability {explanation.probability:.2f}"
    if explanation.knowledge is not None and explanation.knowledge.diagnosis != explanation.label:
        title += f" ({explanation.knowledge.diagnosis})"
    figure.suptitle(
        f"{title}\n{explanation.method}; shaded: time regions of highest attribution; "
        "orange band: |attribution|",
        fontsize=12,
    )
    figure.savefig(out_png, dpi=dpi)
    return out_png


def _draw_lead(
    axis: Axes,
    explanation: Explanation,
    lead: str,
    time: np.ndarray,
    trace: np.ndarray,
    saliency: np.ndarray,
    scale: tuple[float, float],
) -> None:
    """One lead's row: grid, regions, saliency band, trace and name."""
    axis.grid(which="major", axis="x", color="#f0c8c8", linewidth=0.8)
    axis.grid(which="minor", axis="x", color="#f7e1e1", linewidth=0.5)
    axis.tick_params(axis="y", labelsize=7)
    for region in explanation.regions:
        axis.axvspan(region.start_s, region.end_s, color=_REGION_COLOUR, alpha=0.3, linewidth=0)
    missing = lead in explanation.missing_leads
    low, high = float(trace.min()), float(trace.max())
    span = high - low or 1.0
    if not missing:
        band_bottom = low - 0.35 * span
        axis.fill_between(
            time,
            band_bottom,
            band_bottom + 0.3 * span * saliency,
            color=_SALIENCY_COLOUR,
            alpha=0.45,
            linewidth=0,
        )
        axis.set_ylim(band_bottom, high + 0.05 * span)
    importance = explanation.lead_importance[lead]
    colour = _MISSING_COLOUR if missing else _importance_colour(importance, scale)
    axis.plot(time, trace, color=colour, linewidth=0.8)
    axis.set_ylabel(lead, rotation=0, ha="right", va="center", fontsize=11, fontweight="bold")
    if missing:
        axis.text(
            0.5,
            0.5,
            "missing",
            transform=axis.transAxes,
            ha="center",
            va="center",
            color=_MISSING_COLOUR,
            fontsize=12,
        )


def _draw_importance(
    axis: Axes, explanation: Explanation, lead: str, scale: tuple[float, float]
) -> None:
    """A horizontal bar with the lead's importance and its percentage."""
    importance = explanation.lead_importance[lead]
    top = scale[1] or 1.0
    axis.barh([0], [importance], color=_importance_colour(importance, scale), height=0.6)
    axis.set_xlim(0, top * 1.6)  # room for the percentage after the longest bar
    axis.set_ylim(-0.5, 0.5)
    axis.set_axis_off()
    label = "missing" if lead in explanation.missing_leads else f"{importance:.0%}"
    axis.text(importance + 0.05 * top, 0, label, va="center", fontsize=9)


def _importance_colour(importance: float, scale: tuple[float, float]) -> tuple[float, float, float]:
    """Grey for the least important present lead to red for the most important one."""
    low, high = scale
    level = min(max((importance - low) / (high - low), 0.0), 1.0) if high > low else 1.0
    grey, red = (0.45, 0.45, 0.45), (0.8, 0.05, 0.05)
    r, g, b = (a + level * (c - a) for a, c in zip(grey, red, strict=True))
    return r, g, b
