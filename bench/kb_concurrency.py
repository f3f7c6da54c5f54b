"""Benchmark: several jobs on one knowledge base at the same time.

A knowledge base file with the curated pack and the PTB-XL labels' ``name`` vectors embedded
(all-MiniLM-L6-v2) is shared by:

1. two processes that each open it, read the PTB-XL label vectors from the cache (what
   training, evaluation and zero-shot read) and hold it ``--hold`` seconds, started 0.5 s apart
   so that they overlap: opened read-only (how ked's jobs open it now) and, side by side, opened
   for writing (how training and evaluation opened it before);
2. ``ked kb list`` run in a loop while a ``ked pretrain --store`` (xresnet1d_small, a few steps
   on the packaged sample) trains against the same file.

A job succeeds when it exits 0. DuckDB lets one writing process or many reading processes hold
a file, so the write-mode pair shows the lock the read-only opens avoid.

    python bench/kb_concurrency.py [--hold 3] [--root /tmp/ked_bench_kb]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders.text import Embedder, EncoderSpec, label_entries, label_matrix
from kb_store.connection import KnowledgeBaseError
from kb_store.store import KnowledgeBase
from knowledge.curated import import_pack

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def knowledge_base(path: Path) -> Path:
    """The curated pack with the PTB-XL ``name`` vectors embedded (built once, reused)."""
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        with KnowledgeBase(tmp) as kb:
            import_pack(kb)
            label_matrix(Embedder(kb, EncoderSpec()), label_entries(kb, vocab="ptbxl"), ["name"])
        tmp.replace(path)
    return path


def reader(db: str, mode: str, hold: float) -> None:
    """One job: open the file, read the label vectors from the cache, hold it, report."""
    started = time.time()
    try:
        with KnowledgeBase(db, read_only=mode == "read-only") as kb:
            entries = label_entries(kb, vocab="ptbxl")
            vectors = label_matrix(
                Embedder(kb, EncoderSpec()), entries, ["name"], embed_missing=False
            )
            time.sleep(hold)
        result = {"ok": True, "labels": len(vectors.entries)}
    except KnowledgeBaseError as exc:
        result = {"ok": False, "error": str(exc)[:120]}
    print(json.dumps({**result, "start": started, "end": time.time()}))


def pair(db: Path, mode: str, hold: float) -> list[dict]:
    """Two jobs started 0.5 s apart; their outcomes."""
    command = [sys.executable, __file__, "--reader", str(db), mode, "--hold", str(hold)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=ENV)
    time.sleep(0.5)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=ENV)
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in (first, second)]


def kb_list_during_training(db: Path, root: Path) -> tuple[int, int, float, str]:
    """(successful ``ked kb list`` runs, all runs, training seconds, training outcome)."""
    store, out = root / "store", root / "run"
    shutil.rmtree(out, ignore_errors=True)
    ked = [sys.executable, "-m", "ked", "--db", str(db)]
    subprocess.run([*ked, "data", "build", "--data", "sample", "--out", str(store)], check=True)
    train = [
        *ked, "pretrain", "--store", str(store), "--vocab", "ptbxl", "--view", "name",
        "--encoder", "xresnet1d_small", "--epochs", "1", "--batch-size", "32",
        "--max-steps-per-epoch", "4", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    started = time.perf_counter()
    training = subprocess.Popen(
        train, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    runs = []
    while training.poll() is None:
        runs.append(subprocess.run([*ked, "kb", "list"], capture_output=True, env=ENV).returncode)
    _, stderr = training.communicate()
    seconds = time.perf_counter() - started
    outcome = "ok" if training.returncode == 0 else f"failed: {stderr.strip()[-200:]}"
    if "for writing" in stderr:
        outcome += " (opened the knowledge base for writing)"
    return sum(code == 0 for code in runs), len(runs), seconds, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=3.0, help="seconds each job holds the file")
    parser.add_argument("--root", type=Path, default=Path("/tmp/ked_bench_kb"))
    parser.add_argument("--reader", nargs=2, metavar=("DB", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader(*args.reader, args.hold)
        return
    args.root.mkdir(parents=True, exist_ok=True)
    os.environ["KED_CACHE"] = ENV["KED_CACHE"] = str(args.root / "cache")
    db = knowledge_base(args.root / "kb.duckdb")
    print(f"load average {os.getloadavg()[0]:.2f}; each job holds the file {args.hold:g} s")
    for mode in ("read-only", "write"):
        jobs = pair(db, mode, args.hold)
        overlap = min(j["end"] for j in jobs) - max(j["start"] for j in jobs)
        outcomes = "; ".join("ok" if j["ok"] else f"failed ({j['error']})" for j in jobs)
        succeeded = sum(j["ok"] for j in jobs)
        print(
            f"two jobs opening it {mode:<9}: {succeeded}/2 succeeded, "
            f"overlap {max(overlap, 0):.1f} s: {outcomes}"
        )
    listed, runs, seconds, outcome = kb_list_during_training(db, args.root)
    print(
        f"ked kb list during a {seconds:.0f} s ked pretrain --store: {listed}/{runs} "
        f"succeeded; training {outcome}"
    )


if __name__ == "__main__":
    main()
