"""Benchmark: the on-disk signal store on a synthetic corpus of growing size.

The corpus tiles the real PTB-XL sample (``../shared/data/ptbxl_sample``, 1,625 records; the
packaged 400-record sample when absent) to ``--sizes`` records, each copy augmented (per-lead
gain 0.8-1.2, a circular time shift, Gaussian noise of 0.05 SD), written as a ``ptbxl-array``
folder (float16 (N, 12, 1000) + labels.csv). Per size, side by side in one run:

- build: scanning the corpus into a manifest, then ``build_store`` (stage 1 of every record into
  float16 chunks), records/s; against reading and preparing the records from their source files
  as a loader does every epoch without a store (``ECGDataset`` with no cache), and against the
  same for the real 500 Hz WFDB records of CinC 2021 (``../shared/data/cinc2021``), which the
  pipeline resamples and filters.
- loader: records/s a ``DataLoader`` (batch ``--batch-size``, no workers, random crops) delivers
  from the store, against one xresnet1d101 training step's consumption (``bench/
  pretraining_step.py``'s ``Trainer``: forward, ``AlignmentLoss``, backward, AdamW) on the
  same batches; 20 label columns, random 384-d label vectors (the step's cost does not depend on
  their values).
- peak resident memory (``VmHWM`` of ``/proc/self/status``; ``getrusage``'s maxrss would carry
  the benchmark process's own peak over ``fork`` and ``exec``) of a separate training process
  per size: it opens
  the store's manifest, builds the train split's dataset and runs ``--steps`` xresnet1d101 steps
  from a shuffled loader; and the same with the records prepared into memory (``cache=
  "memory"``, the path without a store) for the sizes up to ``--memory-max``.

    python bench/signal_store.py [--sizes 10000 50000 200000] [--root /tmp/ked_bench_store]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.data_loading import model_rate
from bench.pretraining_step import Trainer, ptbxl_spec
from encoders.datasets import store_manifest
from encoders.ecg import ECGDataset, Manifest, Preprocessing, measure_throughput, open_source
from encoders.ecg.readers.ptbxl import PTBXLArraySource
from encoders.ecg.signal_store import SignalStore, build_store
from encoders.models.ked_model import KedModel, ModelConfig

REPO = Path(__file__).resolve().parents[1]
WFDB = REPO.parent / "shared" / "data" / "cinc2021"
N_LABELS, TEXT_DIM = 20, 384


def make_corpus(folder: Path, size: int) -> str:
    """A ``ptbxl-array`` folder of ``size`` augmented copies of the PTB-XL sample (reused)."""
    spec = f"ptbxl-array:{folder}"
    if (folder / "labels.csv").is_file():
        return spec
    source = open_source(ptbxl_spec())
    assert isinstance(source, PTBXLArraySource)
    signals, count = source.signals, len(source.table)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".signals.tmp.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(size, 12, 1000))
    rng = np.random.default_rng(0)
    for start in range(0, size, 2048):
        rows = np.arange(start, min(size, start + 2048)) % count
        x = np.asarray(signals[rows], dtype=np.float32) * rng.uniform(0.8, 1.2, (len(rows), 12, 1))
        x = np.roll(x, int(rng.integers(1000)), axis=-1) + rng.normal(0, 0.05, x.shape)
        out[start : start + len(rows)] = x
    out.flush()
    del out
    table = source.table.iloc[np.arange(size) % count].copy()
    table["ecg_id"] = np.arange(1, size + 1)
    tmp.replace(folder / "signals_100hz.npy")
    table.to_csv(folder / "labels.csv", index=False)
    return spec


def top_labels(manifest: Manifest) -> list[str]:
    counts = Counter(label for labels in manifest.table["labels"] for label in labels)
    return [label for label, _ in counts.most_common(N_LABELS)]


def naive_rate(manifest: Manifest, labels: list[str], batch_size: int, batches: int) -> float:
    """Records/s of reading and preparing records from their source files (no cache)."""
    dataset = ECGDataset(manifest, Preprocessing(crop="random"), labels, _same)
    return measure_throughput(dataset, batch_size=batch_size, max_batches=batches)


def _same(label: str) -> str:
    return label


def train_dataset(mode: str, where: str) -> ECGDataset:
    """The train split as a training process builds it, from a store or prepared in memory."""
    if mode == "store":
        store = SignalStore(where)
        manifest = store_manifest(store).split("train")
        labels = top_labels(manifest)
        view = store.view(manifest.table["store_row"].to_numpy())
        return ECGDataset(manifest, Preprocessing(crop="random"), labels, _same, prepared=view)
    manifest = Manifest.scan(where).ok.with_splits().split("train")
    return ECGDataset(
        manifest, Preprocessing(crop="random"), top_labels(manifest), _same, cache="memory"
    )


def child(mode: str, where: str, steps: int, batch_size: int) -> None:
    """A training process: dataset, shuffled loader, ``steps`` xresnet1d101 steps; peak RSS."""
    torch.manual_seed(0)
    dataset = train_dataset(mode, where)
    labels = torch.nn.functional.normalize(torch.randn(len(dataset.labels), TEXT_DIM), dim=-1)
    trainer = Trainer(KedModel(ModelConfig(encoder="xresnet1d101", text_dim=TEXT_DIM)))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    for x, _, targets in islice(loader, steps):
        trainer.step(x, torch.nan_to_num(targets), labels)
    status = Path("/proc/self/status").read_text()
    peak_kib = int(
        next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]
    )
    print(json.dumps({"records": len(dataset), "peak_rss_mib": peak_kib / 1024}))


def peak_rss(mode: str, where: str, steps: int, batch_size: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, where, "--steps", str(steps)]
    command += ["--batch-size", str(batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--root", type=Path, default=Path("/tmp/ked_bench_store"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="model steps per measurement")
    parser.add_argument("--memory-max", type=int, default=50_000, help="largest in-memory run")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "WHERE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps, args.batch_size)
        return
    print(
        f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f}, batch {args.batch_size}"
    )
    wfdb = Manifest.scan(f"cinc2021:{WFDB}").ok if WFDB.is_dir() else None
    rows = []
    model = None
    for size in args.sizes:
        spec = make_corpus(args.root / f"corpus-{size}", size)
        started = time.perf_counter()
        manifest = Manifest.scan(spec).ok
        scan_s = time.perf_counter() - started
        shutil.rmtree(args.root / f"store-{size}", ignore_errors=True)  # a build from scratch
        summary = build_store(manifest, args.root / f"store-{size}", Preprocessing())
        labels = top_labels(manifest)
        naive = naive_rate(manifest, labels, args.batch_size, 20)
        wfdb_rate = naive_rate(wfdb, top_labels(wfdb), args.batch_size, 4) if wfdb else float("nan")
        dataset = train_dataset("store", str(args.root / f"store-{size}"))
        loader_rate = measure_throughput(dataset, batch_size=args.batch_size, max_batches=60)
        if model is None:
            batches = list(islice(DataLoader(dataset, batch_size=args.batch_size), args.steps))
            vectors = torch.nn.functional.normalize(torch.randn(len(labels), TEXT_DIM), dim=-1)
            model = model_rate(
                "xresnet1d101", [(x, torch.nan_to_num(t)) for x, _, t in batches], vectors
            )
        store_rss = peak_rss("store", str(args.root / f"store-{size}"), args.steps, args.batch_size)
        memory_rss = (
            peak_rss("memory", spec, args.steps, args.batch_size)
            if size <= args.memory_max
            else None
        )
        rows.append((size, scan_s, summary, naive, wfdb_rate, loader_rate, store_rss, memory_rss))
        report(rows, model)


def report(rows: list, model: float) -> None:
    print(f"\nxresnet1d101 training step: {model:.1f} records/s")
    print(
        f"{'records':>8} {'scan s':>7} {'build s':>8} {'build r/s':>9} {'epoch r/s':>9} "
        f"{'WFDB r/s':>8} {'store r/s':>9} {'/ model':>7} {'RSS store MiB':>13} "
        f"{'RSS memory MiB':>14}"
    )
    for size, scan_s, summary, naive, wfdb, loader, store_rss, memory_rss in rows:
        memory = f"{memory_rss['peak_rss_mib']:14.0f}" if memory_rss else f"{'-':>14}"
        print(
            f"{size:8d} {scan_s:7.1f} {summary.wall_s:8.1f} {summary.records_per_s:9.0f} "
            f"{naive:9.0f} {wfdb:8.0f} {loader:9.0f} {loader / model:7.1f} "
            f"{store_rss['peak_rss_mib']:13.0f} {memory}"
        )
    first = rows[0][6]["peak_rss_mib"]
    print(
        "peak RSS from the store vs the smallest size: "
        + ", ".join(f"{r[0]}: {r[6]['peak_rss_mib'] / first - 1:+.1%}" for r in rows)
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
