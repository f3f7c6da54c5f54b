"""The on-disk signal store: built once, resumed, updated by change, memory-mapped read-only;
the LOCAL_RANK device rule; knowledge-base jobs that read it without its write lock."""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from encoders.datasets import build_signal_store, datasets, open_manifest, store_manifest
from encoders.ecg import Manifest, Preprocessing, sample_data_dir
from encoders.ecg.signal_store import SignalStore, SignalStoreError, build_store
from encoders.text import Embedder, EncoderSpec
from encoders.text.device import process_device
from encoders.training import load_checkpoint
from kb_store.connection import ReadOnlyError, read_or_write
from kb_store.store import KnowledgeBase
from tests.conftest import copy_kb
from tests.support.cli import run_ked

LABELS = ["SCP:NORM", "SCP:IMI", "atrial fibrillation"]
MAPPING = {label: label for label in LABELS}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))


def _cinc_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "cinc"
    shutil.copytree(sample_data_dir() / "cinc2021", folder)
    return folder


def test_store_serves_the_same_items_as_memory_and_a_rebuild_reuses_everything(
    tmp_path: Path,
) -> None:
    summary = build_signal_store(["sample"], tmp_path / "store")
    assert (summary.records, summary.prepared, summary.reused) == (400, 400, 0)
    again = build_signal_store(["sample"], tmp_path / "store")
    assert (again.prepared, again.reused) == (0, 400)
    store = SignalStore(tmp_path / "store")
    from_store = datasets(
        store_manifest(store), LABELS, MAPPING, Preprocessing(), splits=("val",), store=store
    )["val"]
    in_memory = datasets(
        open_manifest("sample"), LABELS, MAPPING, Preprocessing(), splits=("val",)
    )["val"]
    assert from_store.record_ids == in_memory.record_ids
    np.testing.assert_array_equal(from_store.targets, in_memory.targets)
    for index in (0, 57, len(from_store) - 1):
        x, mask, target = from_store[index]
        x0, mask0, target0 = in_memory[index]
        assert x.dtype == torch.float32 and x.shape == (12, 1000)
        assert float((x - x0).abs().max()) < 0.02  # float16 storage
        assert torch.equal(mask, mask0) and torch.equal(target, target0)


def test_store_pickles_as_paths_and_maps_read_only_in_loader_workers(tmp_path: Path) -> None:
    build_signal_store(["sample"], tmp_path / "store")
    store = SignalStore(tmp_path / "store")
    train = datasets(
        store_manifest(store), LABELS, MAPPING, Preprocessing(), splits=("train",), store=store
    )["train"]
    assert len(pickle.dumps(train)) < 200_000  # 185 records of 12 x 1000 float16 would be 4.4 MB
    view = train._cache
    view.get(0, train.record_ids[0])
    mapped = next(iter(view._maps.values()))
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert copy.deepcopy(view)._maps == {}  # __getstate__ drops the maps, as pickling does
    loader = DataLoader(train, batch_size=64, num_workers=1)
    batches = [x for x, _, _ in loader]
    assert sum(len(x) for x in batches) == len(train)
    assert torch.equal(batches[0][0], train[0][0])


def test_interrupted_build_resumes_without_redoing_finished_chunks(tmp_path: Path) -> None:
    manifest = open_manifest("sample")
    folder = tmp_path / "store"
    done = []

    def crash_after_250(count: int) -> None:
        done.append(count)
        if sum(done) >= 250:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_store(manifest, folder, Preprocessing(), chunk_records=100, on_record=crash_after_250)
    assert not (folder / "store.json").exists()  # nothing committed, nothing for readers
    with pytest.raises(SignalStoreError, match="ked data build"):
        SignalStore(folder)
    resumed = build_store(manifest, folder, Preprocessing(), chunk_records=100)
    assert (resumed.resumed, resumed.prepared) == (200, 200)
    fresh = build_store(manifest, tmp_path / "fresh", Preprocessing(), chunk_records=100)
    assert fresh.prepared == 400
    rows = np.arange(400)
    a, b = SignalStore(folder).view(rows), SignalStore(tmp_path / "fresh").view(rows)
    for index in (0, 199, 250, 399):
        np.testing.assert_array_equal(a.get(index, "r").x, b.get(index, "r").x)
    assert not list((folder / "chunks").glob(".*"))  # no temporary file left behind


def test_only_changed_and_new_records_are_prepared_again(tmp_path: Path) -> None:
    cinc = _cinc_copy(tmp_path)
    specs = ["sample", str(cinc)]
    first = build_signal_store(specs, tmp_path / "store")
    assert (first.records, first.prepared) == (402, 402)
    header = cinc / "A1041.hea"
    stat = header.stat()
    os.utime(header, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    changed = build_signal_store(specs, tmp_path / "store")
    assert (changed.prepared, changed.reused) == (1, 401)
    (cinc / "HR06002.hea").unlink()
    vanished = build_signal_store(specs, tmp_path / "store")
    assert (vanished.records, vanished.prepared) == (401, 0)
    chunks = {p.name for p in (tmp_path / "store" / "chunks").glob("*.npy")}
    assert len(chunks) == 2 * 2  # data + masks of the sample's chunk and of the changed record's


def test_store_refuses_other_stage1_settings_and_a_missing_folder(tmp_path: Path) -> None:
    build_signal_store(["sample"], tmp_path / "store")
    store = SignalStore(tmp_path / "store")
    store.require(Preprocessing(crop="random"))  # stage 2 may differ
    with pytest.raises(SignalStoreError, match="prepared with"):
        store.require(Preprocessing(fs=250.0))
    with pytest.raises(SignalStoreError, match="no signal store"):
        SignalStore(tmp_path / "nothing")


def test_each_torchrun_rank_takes_its_local_rank_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert process_device("cuda") == "cuda"
    assert process_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_device("cuda") == "cuda:3"
    assert process_device("cuda:0") == "cuda:3"
    assert process_device("cpu") == "cpu"


def test_read_only_jobs_fall_back_to_writing_only_to_embed(
    curated_kb: Path, tmp_path: Path
) -> None:
    db = copy_kb(curated_kb, tmp_path)
    with KnowledgeBase(db, read_only=True) as kb:
        embedder = Embedder(kb, EncoderSpec())
        with pytest.raises(ReadOnlyError, match="not embedded"):
            embedder.embed(["a text nobody embedded"])
        assert embedder._encoder is None  # refused before loading the model
    opened = []

    def work(kb: KnowledgeBase) -> str:
        opened.append(kb.read_only)
        if kb.read_only:
            raise ReadOnlyError("1 texts are not embedded yet")
        return "written"

    assert read_or_write(lambda ro: KnowledgeBase(db, read_only=ro), work) == "written"
    assert opened == [True, False]
    missing = tmp_path / "new.duckdb"
    assert (
        read_or_write(lambda ro: KnowledgeBase(missing, read_only=ro), lambda kb: kb.read_only)
        is False
    )


def test_two_rank_torchrun_pretraining_from_a_store_while_another_job_reads_the_kb(
    embedded_kb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_kb(embedded_kb, tmp_path)
    store, out = tmp_path / "store", tmp_path / "run"
    code, stdout, stderr = run_ked(capsys, "data", "build", "--data", "sample", "--out", str(store))
    assert code == 0, stderr
    assert "400 records" in stdout
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", "29531", "-m", "ked", "--db", str(db), "pretrain",
        "--store", str(store), "--vocab", "ptbxl", "--view", "name",
        "--encoder", "xresnet1d_small", "--epochs", "1", "--batch-size", "16",
        "--max-steps-per-epoch", "3", "--workers", "1", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    training = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    readers = []
    while training.poll() is None:
        reader = subprocess.run(
            [sys.executable, "-m", "ked", "--db", str(db), "kb", "list"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        readers.append(reader)
        time.sleep(0.2)
    stdout, stderr = training.communicate(timeout=300)
    assert training.returncode == 0, stderr[-3000:]
    assert "best epoch 1" in stdout
    assert "for writing" not in stderr  # every label vector was cached: read-only throughout
    assert readers and all(r.returncode == 0 for r in readers), [r.stderr for r in readers]
    assert all("atrial fibrillation" in r.stdout.lower() for r in readers)
    checkpoint = load_checkpoint(out)
    assert checkpoint.config["training"]["store"] == str(store)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_pretrain_needs_exactly_one_of_data_and_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["pretrain", "--vocab", "ptbxl", "--out", str(tmp_path / "run")]
    code, _, err = run_ked(capsys, *base)
    assert code == 2 and "exactly one of --data and --store" in err
    code, _, err = run_ked(capsys, *base, "--store", str(tmp_path / "none"), "--data", "sample")
    assert code == 2


def test_manifest_of_a_store_splits_like_its_sources(tmp_path: Path) -> None:
    build_signal_store(["sample"], tmp_path / "store")
    stored = store_manifest(SignalStore(tmp_path / "store"), split_seed=3).table
    direct = open_manifest("sample", split_seed=3).table
    assert list(stored["record_id"]) == list(direct["record_id"])
    assert list(stored["split"]) == list(direct["split"])
    assert isinstance(SignalStore(tmp_path / "store").manifest(), Manifest)
