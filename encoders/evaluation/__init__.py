"""Evaluation: metrics with bootstrap intervals, validation thresholds, reports, plots, and
label-space diagnostics.

Names load with their module on first use (:mod:`encoders.lazy`): the command line reads
``DEFAULT_THRESHOLD`` without loading scipy and matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from encoders.lazy import lazy_getattr

if TYPE_CHECKING:
    from encoders.evaluation.bootstrap import BootstrapSettings, Estimate
    from encoders.evaluation.label_space import (
        DEFAULT_THRESHOLD,
        LabelPair,
        LabelSpace,
        PairAcrossViews,
        ViewComparison,
        ViewStats,
        compare_views,
        cosine_similarity,
    )
    from encoders.evaluation.metrics import (
        EvaluationResult,
        LabelResult,
        Mean,
        Threshold,
        ThresholdMetrics,
        ThresholdResult,
        choose_thresholds,
        evaluate,
    )
    from encoders.evaluation.plots import plot_auroc_bars, plot_roc_curves, plot_similarity_heatmap
    from encoders.evaluation.report import (
        Predictions,
        read_predictions,
        report_dict,
        report_markdown,
        write_predictions,
        write_report,
    )

__getattr__ = lazy_getattr(__name__)

__all__ = [
    "DEFAULT_THRESHOLD",
    "BootstrapSettings",
    "Estimate",
    "EvaluationResult",
    "LabelPair",
    "LabelResult",
    "LabelSpace",
    "Mean",
    "PairAcrossViews",
    "Predictions",
    "Threshold",
    "ThresholdMetrics",
    "ThresholdResult",
    "ViewComparison",
    "ViewStats",
    "choose_thresholds",
    "compare_views",
    "cosine_similarity",
    "evaluate",
    "plot_auroc_bars",
    "plot_roc_curves",
    "plot_similarity_heatmap",
    "read_predictions",
    "report_dict",
    "report_markdown",
    "write_predictions",
    "write_report",
]
