"""Benchmark: bootstrap AUROC/AUPRC resamples, ked's vectorised ranking against sklearn.

Measured side by side in one run on the same simulated scores and the same resample counts:
(1) ``encoders.evaluation.metrics`` computing every resample of every label at once from one
sort per label; (2) ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` called
once per resample and label with the resample's counts as ``sample_weight``. Both give the
same values (checked to 1e-9 here).

    python bench/bootstrap_metrics.py [--recordings 2000] [--labels 60] [--resamples 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders.evaluation.bootstrap import BootstrapSettings, resample_counts
from encoders.evaluation.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=60)
    parser.add_argument("--resamples", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    targets = (rng.random((args.recordings, args.labels)) < 0.1).astype(np.int64)
    scores = np.round(targets + rng.normal(0.0, 1.0, targets.shape), 2)  # with ties
    labels = [f"label {j}" for j in range(args.labels)]
    settings = BootstrapSettings(resamples=args.resamples)

    started = time.perf_counter()
    result = evaluate(scores, targets, labels, bootstrap=settings)
    ked_s = time.perf_counter() - started

    counts = resample_counts(args.recordings, settings)
    started = time.perf_counter()
    auroc = np.array(
        [
            [
                roc_auc_score(targets[:, j], scores[:, j], sample_weight=w)
                for j in range(args.labels)
            ]
            for w in counts
        ]
    )
    ap = np.array(
        [
            [
                average_precision_score(targets[:, j], scores[:, j], sample_weight=w)
                for j in range(args.labels)
            ]
            for w in counts
        ]
    )
    sklearn_s = time.perf_counter() - started
    assert np.allclose(auroc, result.samples["auroc"], atol=1e-9, equal_nan=True)
    assert np.allclose(ap, result.samples["auprc"], atol=1e-9, equal_nan=True)

    print(
        f"{args.recordings} recordings x {args.labels} labels x {args.resamples} resamples "
        "(AUROC and AUPRC)"
    )
    print(f"ked evaluate(), vectorised:     {ked_s:7.2f} s (whole evaluation)")
    print(f"sklearn, per resample and label: {sklearn_s:7.2f} s (bootstrap resamples only)")
    print(f"ratio: {sklearn_s / ked_s:.0f}x")


if __name__ == "__main__":
    main()
