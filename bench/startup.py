"""Benchmark: whole-process start-up of ``ked --help``, ``ked kb list`` and a warm ``ked embed``.

Each command runs as a fresh process, as a user's shell runs it (median of ``--repeat`` runs,
wall time). Measured side by side in the same run, interleaved: the same command with every
ked module imported first (what start-up cost when each command module imported the pipeline
at the top), and a bare ``import torch, transformers, pandas, scipy``. The warm ``ked embed``
finds all 71 name-view vectors of the ptbxl labels in the cache (one cold run fills it first).

    python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 1.5

# Imports every module of ked's packages, then runs the command: the eager start-up.
EAGER = """
import importlib, pkgutil, sys
for package in ("knowledge", "kb_store", "encoders", "ked", "prompts"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
from ked.cli import main
sys.argv = ["ked", *sys.argv[1:]]
main()
"""
NAIVE_IMPORT = "import torch, transformers, pandas, scipy"


def wall_s(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        ked = [sys.executable, "-m", "ked"]
        embed = ["--db", db, "embed", "--vocab", "ptbxl", "--view", "name"]
        pack = ["--db", db, "knowledge", "import-pack", "--vocab", "ptbxl"]
        subprocess.run([*ked, *pack], check=True, capture_output=True)
        subprocess.run([*ked, *embed], check=True, capture_output=True)  # cold: fills the cache
        commands = {
            "ked --help": ["--help"],
            "ked kb list": ["--db", db, "kb", "list"],
            "ked embed (warm)": embed,
        }
        lazy: dict[str, list[float]] = {name: [] for name in commands}
        eager: dict[str, list[float]] = {name: [] for name in commands}
        naive: list[float] = []
        load_before = os.getloadavg()[0]
        for _ in range(args.repeat):
            for name, argv in commands.items():
                lazy[name].append(wall_s([*ked, *argv]))
                eager[name].append(wall_s([sys.executable, "-c", EAGER, *argv]))
            naive.append(wall_s([sys.executable, "-c", NAIVE_IMPORT]))
        load_after = os.getloadavg()[0]

    print(
        f"whole-process wall time, median of {args.repeat}, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"{'command':<20} {'ked now':>9} {'eager imports':>14} {'ratio':>7}  goal < {GOAL_S} s")
    for name in commands:
        now, before = statistics.median(lazy[name]), statistics.median(eager[name])
        met = "met" if now < GOAL_S else "NOT met"
        print(f"{name:<20} {now:>7.2f} s {before:>12.2f} s {before / now:>6.1f}x  {met}")
    print(f"{'python -c ' + repr(NAIVE_IMPORT)}: {statistics.median(naive):.2f} s")


if __name__ == "__main__":
    main()
