"""Manifests, the torch dataset with its caches, and the splits."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from encoders.ecg import (
    ECGDataset,
    Manifest,
    Preprocessing,
    SkippedRecord,
    assign_splits,
    measure_throughput,
    open_source,
    ptbxl_fold_split,
    sample_data_dir,
    seeded_split,
)

TARGETS = ("sinus rhythm", "atrial fibrillation", "sinus tachycardia")
NAMES = {
    "SCP:SR": "sinus rhythm",
    "SCP:AFIB": "atrial fibrillation",
    "SCP:STACH": "sinus tachycardia",
    "SNOMED:164889003": "atrial fibrillation",
    "SNOMED:426783006": "sinus rhythm",
    "SNOMED:164909002": "left bundle branch block",
}


@pytest.fixture(scope="module")
def sample_manifest() -> Manifest:
    return Manifest.scan("sample")


@pytest.fixture
def cinc_with_corrupt_record(tmp_path: Path) -> Path:
    """The two packaged CinC records plus a copy of one whose signal file is truncated."""
    folder = tmp_path / "cinc"
    shutil.copytree(sample_data_dir() / "cinc2021", folder)
    header = (folder / "A1041.hea").read_text().replace("A1041", "A9999")
    (folder / "A9999.hea").write_text(header)
    (folder / "A9999.mat").write_bytes((folder / "A1041.mat").read_bytes()[:3000])
    return folder


def test_scan_reports_the_corrupt_record_and_keeps_the_others(
    cinc_with_corrupt_record: Path,
) -> None:
    source = open_source(f"cinc2021:{cinc_with_corrupt_record}")
    skipped: list[SkippedRecord] = []

    records = list(source.iter_records(skipped))
    manifest = Manifest.scan(source)

    assert [r.record_id for r in records] == ["A1041", "HR06002"]
    assert [(s.record_id, Path(s.path).name) for s in skipped] == [("A9999", "A9999.hea")]
    assert manifest.table["ok"].tolist() == [True, False, True]
    assert "A9999" in manifest.errors["error"].item()
    dataset = ECGDataset(manifest, Preprocessing(), TARGETS, NAMES.get)
    assert dataset.record_ids == ("A1041", "HR06002")
    np.testing.assert_array_equal(dataset.targets, [[0, 1, 0], [1, 0, 0]])


def test_manifest_round_trip_without_rescanning(
    sample_manifest: Manifest, cinc_with_corrupt_record: Path, tmp_path: Path
) -> None:
    cinc = Manifest.scan(f"cinc2021:{cinc_with_corrupt_record}")
    both = Manifest.concat([sample_manifest, cinc])
    path = both.save(tmp_path / "manifest.parquet")

    loaded = Manifest.load(path)
    reopened = Manifest.open("cinc2021:/no/such/folder", path)  # would fail if it rescanned

    pd.testing.assert_frame_equal(loaded.table, both.table)
    pd.testing.assert_frame_equal(reopened.table, both.table)
    row = loaded.table.iloc[0]
    assert (row["spec"], row["dataset"], row["fs"], row["n_samples"]) == (
        "sample",
        "ptbxl",
        100.0,
        1000,
    )
    assert len(row["leads"]) == 12 and row["split"] in {"train", "val"}
    assert loaded.table["record_id"].iloc[-3:].tolist() == ["A1041", "A9999", "HR06002"]


def test_manifest_open_scans_once(cinc_with_corrupt_record: Path, tmp_path: Path) -> None:
    path = tmp_path / "cinc.parquet"
    spec = f"cinc2021:{cinc_with_corrupt_record}"

    first = Manifest.open(spec, path)
    shutil.rmtree(cinc_with_corrupt_record)

    pd.testing.assert_frame_equal(Manifest.open(spec, path).table, first.table)


def test_dataset_items_and_targets(sample_manifest: Manifest) -> None:
    table = pd.read_csv(sample_data_dir() / "ptbxl_400_labels.csv")

    dataset = ECGDataset(sample_manifest, Preprocessing(), TARGETS, NAMES.get)
    x, mask, target = dataset[7]

    assert len(dataset) == 400
    assert x.shape == (12, 1000) and x.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.all()
    assert target.dtype == torch.float32 and target.shape == (3,)
    expected = table[["rhythm:SR", "rhythm:AFIB", "rhythm:STACH"]].to_numpy(np.float32)
    np.testing.assert_array_equal(dataset.targets, expected)
    spec, ref = sample_manifest.ref(7)
    direct = Preprocessing().apply(open_source(spec).read(ref))
    np.testing.assert_array_equal(x.numpy(), direct.x)


def test_caches_give_the_same_items_and_are_reused(
    sample_manifest: Manifest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    subset = Manifest(sample_manifest.table.iloc[:40].reset_index(drop=True))
    settings = Preprocessing(crop="center")
    plain = ECGDataset(subset, settings, TARGETS, NAMES.get)

    memory = ECGDataset(subset, settings, TARGETS, NAMES.get, cache="memory")
    disk = ECGDataset(subset, settings, TARGETS, NAMES.get, cache=tmp_path / "cache")
    with caplog.at_level("INFO", logger="encoders.ecg.dataset"):
        again = ECGDataset(subset, settings, TARGETS, NAMES.get, cache=tmp_path / "cache")

    assert any("reusing prepared ECG cache" in r.getMessage() for r in caplog.records)
    for index in (0, 17, 39):
        for cached in (memory, disk, again):
            for a, b in zip(plain[index], cached[index], strict=True):
                torch.testing.assert_close(a, b)


def test_loader_with_workers_over_a_disk_cache(sample_manifest: Manifest, tmp_path: Path) -> None:
    subset = Manifest(sample_manifest.table.iloc[:64].reset_index(drop=True))
    dataset = ECGDataset(
        subset, Preprocessing(crop="random"), TARGETS, NAMES.get, cache=tmp_path / "c"
    )

    batches = list(DataLoader(dataset, batch_size=16, num_workers=2))

    assert [b[0].shape for b in batches] == [(16, 12, 1000)] * 4
    torch.testing.assert_close(
        torch.cat([b[2] for b in batches]), torch.from_numpy(dataset.targets)
    )
    assert math.isfinite(measure_throughput(dataset, batch_size=16, max_batches=2))


def test_dataset_over_records_with_random_crops_follows_torch_seed() -> None:
    records = list(open_source(f"cinc2021:{sample_data_dir() / 'cinc2021'}").iter_records())
    dataset = ECGDataset(records, Preprocessing(crop="random"), TARGETS, NAMES.get)

    torch.manual_seed(3)
    first = dataset[0][0]
    torch.manual_seed(3)
    second = dataset[0][0]

    torch.testing.assert_close(first, second)
    assert not all(torch.equal(first, dataset[0][0]) for _ in range(3))  # A1041 lasts 17 s


def test_seeded_splits_keep_patients_together_and_are_reproducible() -> None:
    rng = np.random.default_rng(0)
    record_ids = [f"r{i}" for i in range(600)]
    patients = [f"p{rng.integers(0, 150)}" if i % 5 else None for i in range(600)]

    split = seeded_split(record_ids, patients, seed=7)

    by_patient: dict[str, set[str]] = {}
    for patient, name in zip(patients, split, strict=True):
        if patient is not None:
            by_patient.setdefault(patient, set()).add(name)
    assert all(len(names) == 1 for names in by_patient.values())
    counts = pd.Series(split).value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.8, abs=0.05)
    assert counts["val"] == pytest.approx(0.1, abs=0.05)
    assert seeded_split(record_ids, patients, seed=7) == split
    assert seeded_split(record_ids, patients, seed=8) != split
    reverse = seeded_split(record_ids[::-1], patients[::-1], seed=7)
    assert reverse[::-1] == split


def test_known_splits_win_and_mixed_ones_are_refused(sample_manifest: Manifest) -> None:
    with_splits = sample_manifest.with_splits(seed=1)

    # The sample's own split has no test part: a fixed 15% of its train becomes test.
    counts = with_splits.table["split"].value_counts().to_dict()
    assert counts == {"train": 185, "val": 183, "test": 32}
    assert [ptbxl_fold_split(f) for f in (1, 8, 9, 10)] == ["train", "train", "val", "test"]
    with pytest.raises(ValueError, match="1 of 2 records have a known split"):
        assign_splits(["a", "b"], [None, None], ["train", None])


def test_carved_test_split_is_fixed_whatever_the_run_seed_or_order() -> None:
    ids = [str(i) for i in range(1000)]
    known = ["val" if i % 10 == 0 else "train" for i in range(1000)]
    patients = [f"p{i // 2}" for i in range(1000)]  # two records per patient

    splits = assign_splits(ids, patients, known, seed=1)
    assert assign_splits(ids, patients, known, seed=2) == splits
    assert assign_splits(ids[::-1], patients[::-1], known[::-1], seed=3)[::-1] == splits
    assert [s for s, k in zip(splits, known, strict=True) if k == "val"] == ["val"] * 100
    test = [i for i, s in enumerate(splits) if s == "test"]
    assert 0.14 * 900 <= len(test) <= 0.16 * 900
    by_patient: dict[str, set[str]] = {}
    for patient, split in zip(patients, splits, strict=True):
        by_patient.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for p, s in by_patient.items() if "val" not in s)
    # A dataset that defines its own test split keeps it untouched.
    published = ["test" if i % 10 == 1 else k for i, k in enumerate(known)]
    assert assign_splits(ids, patients, published) == published


@pytest.mark.shared_data
def test_code15_patient_level_splits(shared_data: Path) -> None:
    manifest = Manifest.scan(str(shared_data / "code15_sample")).with_splits(
        fractions=(0.6, 0.2, 0.2), seed=0
    )

    table = manifest.table
    assert table["patient_id"].notna().all()
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    assert set(table["split"]) == {"train", "val", "test"}
