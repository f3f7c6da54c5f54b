"""Rebuild ked's shipped PTB-XL sample (ked/sample_data/ptbxl_400.*) from ptbxl_sample/.

Takes all ``val`` records and a seeded choice of ``train`` records that keeps, where the source
has them, at least ``--min-positives`` positives of every rhythm/form/sub_class column (rarest
columns first), then fills up with random train records. Run from the repository root:

    python bench/make_sample_data.py --source ../shared/data/ptbxl_sample
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("make_sample_data")

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("rhythm:", "form:", "sub_class:")


def select(labels: pd.DataFrame, n_train: int, min_positives: int, seed: int) -> np.ndarray:
    """Row positions of the sample: every val row plus ``n_train`` train rows, sorted."""
    val = np.flatnonzero(labels["split"].to_numpy() == "val")
    pool = np.random.default_rng(seed).permutation(np.flatnonzero(labels["split"] == "train"))
    columns = [c for c in labels.columns if c.startswith(GROUPS) and labels[c].sum() > 0]
    chosen: list[int] = []
    for column in sorted(columns, key=lambda c: (labels[c].sum(), c)):
        flags = labels[column].to_numpy()
        need = min_positives - int(flags[val].sum()) - int(flags[chosen].sum())
        for row in pool:
            if need <= 0 or len(chosen) >= n_train:
                break
            if flags[row] and row not in chosen:
                chosen.append(int(row))
                need -= 1
    chosen += [int(row) for row in pool if row not in chosen][: n_train - len(chosen)]
    return np.sort(np.concatenate([val, np.asarray(chosen, dtype=int)]))


def main() -> None:
    """Write ptbxl_400.npz and ptbxl_400_labels.csv into ked/sample_data/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/ptbxl_sample")
    parser.add_argument("--out", type=Path, default=REPO / "ked/sample_data")
    parser.add_argument("--n-train", type=int, default=217)
    parser.add_argument("--min-positives", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20240)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    labels = pd.read_csv(args.source / "labels.csv")
    signals = np.load(args.source / "signals_100hz.npy", mmap_mode="r", allow_pickle=False)
    rows = select(labels, args.n_train, args.min_positives, args.seed)
    sample = labels.iloc[rows]
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "ptbxl_400.npz", signals=np.asarray(signals[rows], np.float16))
    sample.to_csv(args.out / "ptbxl_400_labels.csv", index=False)

    logger.info("%d records: %s", len(sample), sample["split"].value_counts().to_dict())
    for column in (c for c in labels.columns if c.startswith(GROUPS)):
        if labels[column].sum() > 0:
            logger.info("%-22s %4d of %4d", column, sample[column].sum(), labels[column].sum())


if __name__ == "__main__":
    main()
