"""Benchmark: ECG data-loader throughput vs how fast a training step consumes the records.

Loader: records/s that a ``DataLoader`` (``measure_throughput``: a full pass, batch
``--batch-size``, worker start-up included; median of ``--passes`` passes) delivers from an
``ECGDataset`` of the shared PTB-XL sample (1,625 records; the packaged 400-record sample when
the shared folder is absent) with the 105 reference labels as targets: without a cache (each
item read from the memory-mapped source and prepared), with the in-memory cache and with the
memory-mapped ``.npy`` folder cache, each with 0 worker processes and with ``--workers``.
Building a cache (stage 1 of the pipeline for every record) is timed apart; a folder cache is
built once and reused by later runs.

Model: records/s of the pretraining step of ``bench/pretraining_step.py`` (``KedModel`` +
``AlignmentLoss`` + AdamW against the cached 384-d label vectors) for xresnet1d101 and
xresnet1d_small, on the same batches; median of ``--steps`` steps after one warm-up step.

loader / model > 1 means the loader outruns the model, which is then the bottleneck. Each side is
measured alone: in training, worker processes share the CPU cores with the model.

``--spec`` measures another dataset instead (e.g. ``cinc2021:../shared/data/cinc2021``, 500 Hz
WFDB records that the pipeline resamples and filters).

    python bench/data_loading.py [--batch-size 32] [--workers 2] [--steps 3] [--spec SPEC]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader

from bench.pretraining_step import (
    Trainer,
    cached_label_vectors,
    knowledge_base,
    labelled_dataset,
    ptbxl_spec,
)
from encoders.ecg import Manifest, measure_throughput
from encoders.models.ked_model import KedModel, ModelConfig

ENCODERS = ("xresnet1d101", "xresnet1d_small")


def model_rate(
    encoder: str, batches: list[tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor
) -> float:
    """Records/s of the training step: median over ``batches[1:]``, ``batches[0]`` warms up."""
    torch.manual_seed(0)
    trainer = Trainer(KedModel(ModelConfig(encoder=encoder, text_dim=labels.shape[1])))
    seconds = [sum(trainer.step(x, targets, labels).values()) for x, targets in batches]
    return len(batches[0][0]) / statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="measured model steps")
    parser.add_argument("--passes", type=int, default=3, help="loader passes (median taken)")
    parser.add_argument("--spec", help="another dataset spec (default: the PTB-XL sample)")
    args = parser.parse_args()
    spec = args.spec or ptbxl_spec()
    manifest = Manifest.scan(spec).ok
    print(
        f"{len(manifest)} records of {spec}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    loaders = []
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    with tempfile.TemporaryDirectory() as tmp, knowledge_base(tmp) as kb:
        entries, labels = cached_label_vectors(kb)
        for name, cache in (
            ("no cache", None),
            ("memory cache", "memory"),
            ("folder cache (.npy memmap)", Path(tmp) / "prepared"),
        ):
            started = time.perf_counter()
            dataset = labelled_dataset(kb, entries, manifest, cache=cache)
            built = time.perf_counter() - started
            for workers in sorted({0, args.workers}):
                rate = statistics.median(
                    measure_throughput(dataset, batch_size=args.batch_size, num_workers=workers)
                    for _ in range(args.passes)
                )
                loaders.append((name, workers, built, rate))
            if cache == "memory":  # the model's batches: the same records, already prepared
                loader = DataLoader(dataset, batch_size=args.batch_size)
                batches = [(x, targets) for x, _, targets in islice(loader, args.steps + 1)]

    models = {encoder: model_rate(encoder, batches, labels) for encoder in ENCODERS}
    print(f"\n{'training step':<28} {'rec/s':>8}")
    for encoder, rate in models.items():
        print(f"{encoder:<28} {rate:8.1f}")
    print(
        f"\n{'loader':<28} {'workers':>7} {'build s':>8} {'rec/s':>8} "
        + " ".join(f"{'/ ' + e:>17}" for e in ENCODERS)
    )
    for name, workers, built, rate in loaders:
        ratios = " ".join(f"{rate / models[e]:17.1f}" for e in ENCODERS)
        print(f"{name:<28} {workers:>7} {built:8.2f} {rate:8.0f} {ratios}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
