"""The zero-shot figures of the README, end to end on the shared samples, with an honest protocol.

Pretrains on the PTB-XL sample's train split (five diagnoses held out: AFIB, CLBBB, CRBBB, SBRAD,
STACH, with the PTB-XL classes that contain them), with the recipe's defaults
(`encoders.training.recipe`), under two text conditions:

- ``knowledge``: every step draws one of the recipe's views (name, summary, full knowledge);
- ``name``: the bare label names only (the reference's pretraining texts).

Each model is evaluated with both query texts (full knowledge, bare name): the diagonal is the
fair like-for-like ablation, the off-diagonal the crossed conditions. The knowledge query is
also reported with what each label's knowledge states checked against the recording's
measurements (`encoders.inference.criteria`). Model selection (best epoch) uses the validation
split only; every figure is on the carved PTB-XL test split
(`encoders.ecg.splits.carve_test`: a fixed 15% of train that nothing ever selects on), or
on another dataset as a whole (CinC 2021, Chapman, CPSC 2018, CODE-15). Three seeds: the
tables give mean +- standard deviation over seeds and the mean of the per-seed 95% bootstrap
intervals, for groups of labels and then for each label (``seen: X``, ``unseen: X``) with its
positives among the evaluated records.

With ``--few-shot``, the first seed's knowledge-trained model is also adapted with 1%, 10% and
100% of the PTB-XL train split (linear probe and full fine-tune; best epoch on val) and
scored on the same test split.

    python bench/zero_shot.py [--out runs/zero-shot] [--seeds 0 1 2] [--epochs N] [--few-shot]
    python bench/zero_shot.py --combine runs/zs-seed0 runs/zs-seed1 runs/zs-seed2

``--combine`` prints the tables of runs made as separate processes (one seed each, side by
side on several cores) from their ``results.json``, without training or evaluating.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.inference.evaluate import EvalConfig, evaluate_checkpoint
from encoders.training import LoopSettings, PretrainConfig, pretrain
from encoders.training.finetune import FinetuneConfig, finetune
from kb_store.store import KnowledgeBase
from knowledge.curated import import_pack
from knowledge.vocab import load_vocabulary

SHARED = Path(
    os.environ.get("KED_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data")
)
HOLDOUT = ("SCP:AFIB", "SCP:CLBBB", "SCP:CRBBB", "SCP:SBRAD", "SCP:STACH")
TEXT_CONDITIONS = {"knowledge": None, "name": ("name",)}  # None: the recipe's views
QUERIES = (
    "knowledge (full)",
    "knowledge (full) + measured criteria",
    "name",
)  # `ked eval --view full`
MIN_POSITIVES = 5
"""Groups are also reported over their labels with at least this many positives in the
evaluated records (a filter on the records' labels alone: it chooses no model or setting)."""
CROSS = {
    "CinC 2021": "cinc2021:{root}/cinc2021",
    "Chapman": "chapman:{root}/chapman_sample",
    "CPSC 2018": "cpsc2018:{root}/cpsc2018_sample",
    "CODE-15": "code15:{root}/code15_sample",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/zero-shot"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--conditions", nargs="+", default=list(TEXT_CONDITIONS))
    parser.add_argument("--few-shot", action="store_true")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="OUT")
    args = parser.parse_args()
    if args.combine:
        _print_tables(
            [r for out in args.combine for r in json.loads((out / "results.json").read_text())]
        )
        return
    if not SHARED.is_dir():
        raise SystemExit(f"shared ECG samples not found at {SHARED} (set KED_SHARED_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / "ked.duckdb"
    with KnowledgeBase(db) as kb:
        import_pack(kb)
    os.environ.setdefault("KED_CACHE", str(args.out / "cache"))
    ptbxl = f"ptbxl-array:{SHARED}/ptbxl_sample"
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for condition in args.conditions:
        for seed in args.seeds:
            run = args.out / f"{condition}-seed{seed}"
            config = PretrainConfig(data=ptbxl, out=run, db=db, vocab="ptbxl-all", holdout=HOLDOUT)
            loop = replace(config.loop, seed=seed, epochs=args.epochs or config.loop.epochs)
            done = run / "metrics.jsonl"
            if not done.is_file() or len(done.read_text().splitlines()) < loop.epochs:
                views = TEXT_CONDITIONS[condition] or config.views
                resume = (run / "last.pt").is_file()  # a rerun resumes where it stopped
                result = pretrain(replace(config, views=views, loop=loop, resume=resume))
                print(f"{condition} seed {seed}: best epoch {result.best_epoch} (val)", flush=True)
            evaluations: dict[str, tuple[str, str, str | None]] = {
                "PTB-XL test": (ptbxl, "ptbxl-all", None)
            }
            evaluations |= {
                name: (spec.format(root=SHARED), "cinc2021", "all") for name, spec in CROSS.items()
            }
            for dataset, (spec, vocab, split) in evaluations.items():
                outcome = evaluate_checkpoint(
                    EvalConfig(
                        checkpoint=run,
                        data=spec,
                        out=run / f"eval-{dataset.replace(' ', '-')}",
                        db=db,
                        vocab=vocab,
                        views=("full",),
                        eval_split=split,
                    )
                )
                rows += _rows(condition, seed, dataset, outcome)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    _print_tables(rows)
    if args.few_shot:
        _few_shot(args.out / f"knowledge-seed{args.seeds[0]}", ptbxl, db)
    print(f"\n{len(args.seeds)} seeds, {time.perf_counter() - started:.0f} s in all")


def _few_shot(checkpoint: Path, ptbxl: str, db: Path) -> None:
    print("\nfew-shot on the PTB-XL test split (best epoch on val), macro AUROC over its labels")
    for mode in ("linear", "full"):
        for fraction in (0.01, 0.1, 1.0):
            config = FinetuneConfig(
                checkpoint=checkpoint,
                data=ptbxl,
                out=checkpoint.parent / f"finetune-{mode}-{fraction}",
                db=db,
                vocab="ptbxl-all",
                mode=mode,
                fraction=fraction,
                loop=LoopSettings(epochs=20, lr=1e-3, warmup_epochs=0.0),
            )
            result = finetune(config)
            print(
                f"  {mode:6s} {fraction:>5.0%} of train ({result.train_records} records): "
                f"{result.eval_auroc:.3f} (zero-shot {result.zero_shot_eval_auroc:.3f})",
                flush=True,
            )


def _rows(condition: str, seed: int, dataset: str, outcome: Any) -> list[dict[str, Any]]:
    statements = {label.label for label in load_vocabulary("ptbxl").labels}
    out = []
    for query in QUERIES:
        result = outcome.conditions[query]
        groups = {"all labels": result.label_names, **outcome.groups}
        seen = outcome.groups.get("seen in pretraining", [])
        if dataset == "PTB-XL test":
            groups["seen, statements only"] = [label for label in seen if label in statements]
        frequent = {row.label for row in result.labels if row.positives >= MIN_POSITIVES}
        groups |= {
            f"{group}, >= {MIN_POSITIVES} positives": [
                label for label in labels if label in frequent
            ]
            for group, labels in list(groups.items())
        }
        for group, labels in groups.items():
            mean = result.macro_over(labels).to_dict()
            out.append(
                {
                    "trained": condition,
                    "query": query,
                    "seed": seed,
                    "dataset": dataset,
                    "group": group,
                    **{k: mean[k] for k in ("value", "low", "high", "labels")},
                }
            )
        unseen = set(outcome.groups.get("unseen in pretraining", []))
        for row in (row for row in result.labels if row.auroc.value is not None):
            out.append(
                {
                    "trained": condition,
                    "query": query,
                    "seed": seed,
                    "dataset": dataset,
                    "group": f"{'unseen' if row.label in unseen else 'seen'}: {row.label}",
                    "value": row.auroc.value,
                    "low": row.auroc.low,
                    "high": row.auroc.high,
                    "labels": 1,
                    "positives": row.positives,
                }
            )
    return out


def _print_tables(rows: list[dict[str, Any]]) -> None:
    keys = sorted(
        {(r["dataset"], r["group"]) for r in rows}, key=lambda k: (k[0] != "PTB-XL test", k)
    )
    columns = sorted({(r["trained"], r["query"]) for r in rows})
    print("\nzero-shot macro AUROC: mean +- sd over seeds [mean 95% bootstrap interval] (labels)")
    print("columns: trained on / queried with: " + " | ".join(f"{t} / {q}" for t, q in columns))
    for dataset, group in keys:
        cells: list[str] = []
        for trained, query in columns:
            found = [
                r
                for r in rows
                if (r["dataset"], r["group"], r["trained"], r["query"])
                == (dataset, group, trained, query)
                and r["value"] is not None
            ]
            if not found:
                cells.append("undefined")
                continue
            values = np.array([r["value"] for r in found])
            lows = [r["low"] for r in found if r["low"] is not None]
            highs = [r["high"] for r in found if r["high"] is not None]
            interval = f" [{np.mean(lows):.3f}, {np.mean(highs):.3f}]" if lows and highs else ""
            count = found[0].get("positives")
            size = found[0]["labels"] if count is None else f"{count} positive" + "s" * (count != 1)
            cells.append(f"{values.mean():.3f} +- {values.std():.3f}{interval} ({size})")
        if any(cell != "undefined" for cell in cells):  # labels with no positives: not shown
            print(f"{dataset:12s} {group:32s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
