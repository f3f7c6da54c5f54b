"""Train/validation/test splits: known ones (PTB-XL folds, a split column) or seeded, patient-level.

Split names are always ``"train"``, ``"val"`` and ``"test"``. A dataset whose own split has no
test part (the shared PTB-XL sample has train and val only) gets one carved out of its train
part: a fixed share of its patients, chosen with a fixed seed (`TEST_SEED`, not the run's seed),
so every run, seed and command sees the same test records and no selection ever touches them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
TEST_FRACTION = 0.15
"""Share of a train split carved out as test when a dataset defines no test split."""
TEST_SEED = 20261201
"""Seed of that carving: fixed, so the test split never depends on a run's settings."""

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def normalize_split(name: str) -> str:
    """Map a split spelling (``"validation"``, ``"Train"`` ...) to ``train``/``val``/``test``."""
    key = str(name).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split name {name!r}; expected one of {', '.join(SPLITS)}")
    return _SPLIT_ALIASES[key]


def ptbxl_fold_split(strat_fold: int) -> str:
    """PTB-XL's recommended split: folds 1-8 train, 9 validation, 10 test."""
    fold = int(strat_fold)
    if not 1 <= fold <= 10:
        raise ValueError(f"PTB-XL strat_fold must be 1-10, got {strat_fold!r}")
    return "train" if fold <= 8 else "val" if fold == 9 else "test"


def seeded_split(
    record_ids: Sequence[str],
    patient_ids: Sequence[str | None] | None = None,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[str]:
    """Assign each record to train/val/test, keeping every patient's records in one split.

    Records without a patient id are their own group, so a dataset without patient ids is split
    at record level. Groups are shuffled with ``seed`` (the same inputs and seed always give the
    same split, whatever the input order) and taken in turn until each split holds its fraction of
    the records. Returns the split name of each record, in input order.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    if patient_ids is not None and len(patient_ids) != len(record_ids):
        raise ValueError(f"{len(record_ids)} record ids but {len(patient_ids)} patient ids")
    if len(set(record_ids)) != len(record_ids):
        raise ValueError("record ids must be unique")
    groups = [
        f"patient:{patient}" if patient is not None else f"record:{record}"
        for record, patient in zip(record_ids, patient_ids or [None] * len(record_ids), strict=True)
    ]
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    bounds = np.cumsum(fractions)[:2] * len(record_ids)
    assigned: dict[str, str] = {}
    taken = 0
    for position in order:
        group = unique[position]
        assigned[group] = SPLITS[int(np.searchsorted(bounds, taken, side="right"))]
        taken += sizes[group]
    return [assigned[group] for group in groups]


def assign_splits(
    record_ids: Sequence[str],
    patient_ids: Sequence[str | None],
    known: Sequence[str | None],
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[str]:
    """The known splits when every record has one (PTB-XL folds, a split column), else seeded.

    A mix of known and missing splits raises ``ValueError``: filling the gaps at random could put
    a patient on both sides of a published split.
    """
    if len(known) != len(record_ids):
        raise ValueError(f"{len(record_ids)} record ids but {len(known)} known splits")
    present = [split is not None for split in known]
    if all(present):
        splits = [normalize_split(split) for split in known if split is not None]
        return splits if "test" in splits else carve_test(record_ids, patient_ids, splits)
    if any(present):
        raise ValueError(
            f"{sum(present)} of {len(known)} records have a known split and the others none; "
            "split such a collection per dataset"
        )
    return seeded_split(record_ids, patient_ids, fractions=fractions, seed=seed)


def carve_test(
    record_ids: Sequence[str],
    patient_ids: Sequence[str | None],
    splits: Sequence[str],
    *,
    fraction: float = TEST_FRACTION,
    seed: int = TEST_SEED,
) -> list[str]:
    """``splits`` with a patient-level share ``fraction`` of the train records moved to test.

    The carving depends only on the train records' ids (and patients) and the fixed ``seed``:
    the same dataset always yields the same test split, whatever order it is read in.
    """
    train = [i for i, split in enumerate(splits) if split == "train"]
    carved = seeded_split(
        [record_ids[i] for i in train],
        [patient_ids[i] for i in train],
        fractions=(1 - fraction, 0.0, fraction),
        seed=seed,
    )
    out = list(splits)
    for index, split in zip(train, carved, strict=True):
        out[index] = split
    return out
