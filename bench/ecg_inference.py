"""Benchmark: xresnet1d101 inference, recordings/s in eval mode on (B, 12, 1000) windows.

A plain forward (``model.eval()``, autograd left on) against the settings that may speed it up,
measured side by side in one run on real PTB-XL windows (the packaged sample): ``torch.no_grad``,
``torch.inference_mode``, BatchNorm folded into the convs with frozen parameters
(``encoders.models.inference.prepare_for_inference``), ``torch.jit.trace`` + ``torch.jit.freeze``,
``torch.compile`` (inductor, in a fresh cache as on a first run; its first call, which
compiles, is timed apart), and bfloat16 autocast. Then the batch size and
``torch.set_num_threads`` for the best eager setting (a compiled model recompiles for each new
batch size, so it is left out of that sweep).
Channels-last does not apply: that memory format exists for 4-D and 5-D tensors only, and a 1-D
conv's (B, C, T) input has no other layout.

Each variant's output is compared with the plain forward's: max abs diff, that diff over the
output's largest magnitude, and the least cosine between time-pooled outputs (the recording
embeddings ked scores). Variants run in alternating rounds and each reports its median round,
so load from other processes hits them alike. The encoder is untrained; its BatchNorm scales are
set to 1 (a fresh block's last BN starts at 0) and its running statistics are estimated on real
windows, so the features and the folding check are not trivial.

    python bench/ecg_inference.py [--batch-size 32] [--rounds 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from encoders.ecg import Preprocessing, open_source
from encoders.models import create_ecg_encoder
from encoders.models.inference import prepare_for_inference

Context = Callable[[], contextlib.AbstractContextManager[object]]
MATCH = 1e-3  # largest |diff| / max |output| that counts as the same output


@dataclass
class Variant:
    """One way of running the encoder: a callable and the context it runs in."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor] | None
    context: Context = contextlib.nullcontext
    error: str | None = None
    first_call_s: float = float("nan")
    times: list[float] = field(default_factory=list)
    output: torch.Tensor | None = None


def real_windows(count: int) -> torch.Tensor:
    """``count`` preprocessed (12, 1000) windows of the packaged PTB-XL sample."""
    records = islice(open_source("sample").iter_records(), count)
    return torch.from_numpy(np.stack([Preprocessing().apply(r).x for r in records]))


def calibrated_encoder(windows: torch.Tensor) -> nn.Module:
    """xresnet1d101 in eval mode, BN scales 1, running statistics estimated on ``windows``."""
    torch.manual_seed(0)
    model = create_ecg_encoder("xresnet1d101")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            nn.init.ones_(module.weight)
    update_bn(windows.split(32), model)
    return model.eval()


def call(variant: Variant, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds for one call of ``variant`` on ``x``, and its float32 output."""
    assert variant.run is not None
    with variant.context():
        started = time.perf_counter()
        y = variant.run(x)
        elapsed = time.perf_counter() - started
    return elapsed, y.detach().float()


def traced(model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.jit.trace`` then ``torch.jit.freeze`` (which folds BN into the convs itself)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(model, x))


def bf16(context: Context) -> Context:
    """``context`` plus bfloat16 autocast on CPU."""

    @contextlib.contextmanager
    def both() -> Iterator[None]:
        with context(), torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    return both


def variants(model: nn.Module, x: torch.Tensor, compile_: bool) -> list[Variant]:
    prepared = prepare_for_inference(model)
    found = [
        Variant("plain: eval(), autograd on", model),
        Variant("torch.no_grad", model, torch.no_grad),
        Variant("torch.inference_mode", model, torch.inference_mode),
        Variant("BN folded + frozen, no context", prepared),
        Variant("BN folded + frozen, inference_mode", prepared, torch.inference_mode),
        Variant("jit.trace + freeze, no_grad", traced(model, x), torch.no_grad),
        Variant("bf16 autocast, folded, inference_mode", prepared, bf16(torch.inference_mode)),
    ]
    if compile_:
        compiled = prepare_for_inference(model, compile=True)
        found.append(
            Variant("torch.compile, folded, inference_mode", compiled, torch.inference_mode)
        )
    return found


def measure(found: list[Variant], x: torch.Tensor, rounds: int) -> None:
    """First call of each variant, then ``rounds`` alternating rounds of one call each."""
    for variant in found:
        try:
            variant.first_call_s, variant.output = call(variant, x)
        except Exception as err:  # torch.compile may lack a compiler or fail on this platform
            variant.run, variant.error = None, f"{type(err).__name__}: {str(err)[:120]}"
    for _ in range(rounds):
        for variant in found:
            if variant.run is not None:
                variant.times.append(call(variant, x)[0])


def sweep(
    variant: Variant, windows: torch.Tensor, batch_sizes: list[int], rounds: int
) -> list[tuple[int, int, float]]:
    """(threads, batch size, recordings/s) for all ``windows`` in batches, median of rounds."""
    default_threads = torch.get_num_threads()
    settings = [(t, b) for t in sorted({1, default_threads}) for b in batch_sizes]
    times: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    try:
        for _ in range(rounds + 1):  # the first round warms up each setting
            for threads, batch in settings:
                torch.set_num_threads(threads)
                started = time.perf_counter()
                for chunk in windows.split(batch):
                    call(variant, chunk)
                times[threads, batch].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(default_threads)
    return [(t, b, len(windows) / statistics.median(times[t, b][1:])) for t, b in settings]


def report(found: list[Variant], batch: int) -> dict[str, float]:
    """Print each variant's rate and output difference; the rates of those matching plain."""
    reference = found[0].output
    assert reference is not None
    scale = float(reference.abs().max())
    plain = batch / statistics.median(found[0].times)
    print(f"output (B, 768, 32), max |value| {scale:.2f}; 'cos': least cosine of pooled outputs")
    print(
        f"{'variant':<40} {'rec/s':>7} {'x plain':>7} {'max |diff|':>10} {'rel':>8} "
        f"{'cos':>8} {'1st s':>6}"
    )
    matching = {}
    for variant in found:
        if variant.output is None:
            print(f"{variant.name:<40} failed: {variant.error}")
            continue
        rate = batch / statistics.median(variant.times)
        diff = float((variant.output - reference).abs().max())
        cosine = float(
            F.cosine_similarity(variant.output.mean(-1), reference.mean(-1), dim=-1).min()
        )
        if diff / scale <= MATCH:
            matching[variant.name] = rate
        print(
            f"{variant.name:<40} {rate:7.1f} {rate / plain:7.2f} {diff:10.2e} "
            f"{diff / scale:8.1e} {cosine:8.5f} {variant.first_call_s:6.2f}"
        )
    return matching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sweep-records", type=int, default=64)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    windows = real_windows(max(args.batch_size, args.sweep_records))
    x = windows[: args.batch_size]
    model = calibrated_encoder(windows)
    print(
        f"xresnet1d101, {len(x)} real PTB-XL windows of 12 x 1000 per batch, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as inductor_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache  # compile cold, as a first run
        found = variants(model, x, args.compile)
        measure(found, x, args.rounds)
    matching = report(found, len(x))
    plain = len(x) / statistics.median(found[0].times)
    eager = next(v for v in found if v.name == "BN folded + frozen, inference_mode")
    batch_sizes = sorted({1, 8, args.batch_size, args.sweep_records})
    print(f"\n{eager.name}: {args.sweep_records} records in batches of B")
    print(f"{'threads':>7} {'B':>4} {'rec/s':>7} {'x plain':>7}")
    for threads, batch, rate in sweep(eager, windows[: args.sweep_records], batch_sizes, 3):
        matching[f"{eager.name}, {threads} threads, B={batch}"] = rate
        print(f"{threads:>7} {batch:>4} {rate:7.1f} {rate / plain:7.2f}")
    best = max(matching, key=matching.__getitem__)
    print(f"\nbest setting matching plain within {MATCH:.0e} of its scale: {best}")
    print(
        f"best / plain: {matching[best] / plain:.2f}x ({matching[best]:.1f} vs {plain:.1f} rec/s)"
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
