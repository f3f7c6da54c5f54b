"""Manifests, the torch dataset with its caches, and the splits."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from encoders.datasets import open_manifest
from encoders.ecg import (
    ECGDataset,
    ECGReadError,
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
from tests.support.checkpoints import untrained_checkpoint
from tests.support.cli import run_ked

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


def test_manifest_round_trip(
    sample_manifest: Manifest, cinc_with_corrupt_record: Path, tmp_path: Path
) -> None:
    cinc = Manifest.scan(f"cinc2021:{cinc_with_corrupt_record}")
    both = Manifest.concat([sample_manifest, cinc])
    path = both.save(tmp_path / "manifest.parquet")

    loaded = Manifest.load(path)

    pd.testing.assert_frame_equal(loaded.table, both.table)
    row = loaded.table.iloc[0]
    assert (row["spec"], row["dataset"], row["fs"], row["n_samples"]) == (
        "sample",
        "ptbxl",
        100.0,
        1000,
    )
    assert len(row["leads"]) == 12 and row["split"] in {"train", "val"}
    assert Path(row["files"][0]).name == "ptbxl_400.npz" and row["sizes"][0] > 0
    assert loaded.table["record_id"].iloc[-3:].tolist() == ["A1041", "A9999", "HR06002"]
    assert [Path(f).name for f in loaded.table["files"].iloc[-1]] == ["HR06002.hea", "HR06002.mat"]


def test_manifest_open_reads_nothing_again_while_nothing_changed(
    cinc_with_corrupt_record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cinc.parquet"
    spec = f"cinc2021:{cinc_with_corrupt_record}"
    first = Manifest.open(spec, path)
    saved = path.stat().st_mtime_ns
    caplog.clear()

    again = Manifest.open(spec, path)

    pd.testing.assert_frame_equal(again.table, first.table)
    assert path.stat().st_mtime_ns == saved  # not even rewritten
    assert "A9999" not in caplog.text  # the unreadable record was not read again
    shutil.rmtree(cinc_with_corrupt_record)
    with pytest.raises(ECGReadError, match="cinc2021 source not found"):
        Manifest.open(spec, path)


def _touch_later(*paths: Path) -> None:
    """Move the modification time on, as a copy or an edit an hour later would."""
    for path in paths:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3_600_000_000_000))


def test_manifest_picks_up_added_changed_and_vanished_records(
    cinc_with_corrupt_record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = cinc_with_corrupt_record
    path = tmp_path / "cinc.parquet"
    spec = f"cinc2021:{folder}"
    Manifest.open(spec, path)
    # added: a copy of A1041 as A2000; changed: HR06002 with other diagnoses; vanished: A9999
    (folder / "A2000.hea").write_text((folder / "A1041.hea").read_text().replace("A1041", "A2000"))
    shutil.copyfile(folder / "A1041.mat", folder / "A2000.mat")
    header = folder / "HR06002.hea"
    header.write_text(header.read_text().replace("426177001,426783006,713426002", "164889003"))
    _touch_later(header)
    (folder / "A9999.hea").unlink()
    caplog.clear()

    with caplog.at_level(logging.INFO):
        refreshed = Manifest.open(spec, path)

    table = refreshed.table.set_index("record_id")
    assert list(table.index) == ["A1041", "A2000", "HR06002"]
    assert table.loc["HR06002", "labels"] == ("SNOMED:164889003",)
    assert table.loc["A2000", "ok"] and table.loc["A2000", "labels"] == table.loc["A1041", "labels"]
    assert "1 new records, 1 changed, 1 vanished" in caplog.text
    pd.testing.assert_frame_equal(refreshed.table, Manifest.scan(spec).table)
    pd.testing.assert_frame_equal(Manifest.load(path).table, refreshed.table)


def test_record_that_became_unreadable_is_skipped_and_named(
    cinc_with_corrupt_record: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    folder = cinc_with_corrupt_record
    spec = f"cinc2021:{folder}"
    assert open_manifest(spec).table["record_id"].tolist() == ["A1041", "HR06002"]
    signal = folder / "HR06002.mat"
    signal.write_bytes(signal.read_bytes()[:2000])
    _touch_later(signal)
    caplog.clear()

    manifest = open_manifest(spec)

    assert manifest.table["record_id"].tolist() == ["A1041"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipping record HR06002" in w and str(folder) in w for w in warnings)
    summary = [w for w in warnings if w.startswith("2 unreadable records")]
    assert len(summary) == 1 and "HR06002 (" in summary[0] and "A9999 (" in summary[0]
    dataset = ECGDataset(manifest, Preprocessing(), TARGETS, NAMES.get)
    assert dataset[0][0].shape == (12, 1000)


def test_rescan_reads_changes_the_stamps_cannot_see(
    cinc_with_corrupt_record: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    spec = f"cinc2021:{cinc_with_corrupt_record}"
    assert open_manifest(spec).table["labels"].iloc[0] == ("SNOMED:164889003", "SNOMED:164909002")
    # same size, same modification time: only a full rescan sees the new diagnosis
    header = cinc_with_corrupt_record / "A1041.hea"
    stat = header.stat()
    header.write_text(header.read_text().replace("164909002", "164909003"))
    os.utime(header, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert open_manifest(spec).table["labels"].iloc[0][1] == "SNOMED:164909002"
    checkpoint = untrained_checkpoint(tmp_path / "run" / "best.safetensors")
    out = tmp_path / "emb.npy"

    code, _, err = run_ked(
        capsys,
        "encode",
        "--checkpoint",
        str(checkpoint),
        "--data",
        spec,
        "--out",
        str(out),
        "--rescan",
    )

    assert code == 0, err
    assert open_manifest(spec).table["labels"].iloc[0][1] == "SNOMED:164909003"
    assert np.load(out, allow_pickle=False).shape == (2, 8)
    for command in ("pretrain", "finetune", "eval", "zeroshot", "encode", "explain"):
        code, out_text, _ = run_ked(capsys, command, "--help")
        assert code == 0 and "--rescan" in out_text, command


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
