"""``ked demo``: the whole pipeline on embedded defaults, in a few minutes on 2 CPU cores."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from encoders.training import recipe
from ked.cli.common import CliState, epoch_progress
from ked.cli.inference_commands import echo_outcome

if TYPE_CHECKING:
    from encoders.inference.evaluate import EvalOutcome

VOCAB = "ptbxl-all"
QUERY_VIEWS = ("full",)
HELD_OUT = {"SCP:CLBBB": "CLBBB", "SCP:AFIB": "AFIB"}  # complete LBBB, atrial fibrillation


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="folder for knowledge base, run and report")] = Path(
        "ked-demo"
    ),
    data: Annotated[str, typer.Option(help="ECG data (default: the sample ked ships)")] = "sample",
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    encoder: Annotated[str, typer.Option(help="ECG encoder")] = recipe.ENCODER,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
) -> None:
    """Import the curated pack, embed label knowledge, pretrain, evaluate zero-shot, explain.

    Pretraining follows the recipe (`encoders.training.recipe`) on PTB-XL's statements and
    diagnostic classes. Complete LBBB and atrial fibrillation are held out of pretraining, so
    the report shows zero-shot scores for diagnoses the model never trained on, and compares
    the knowledge view (alone and with its measured criteria) with the bare name, on
    the sample's test split, which chose nothing.
    """
    from encoders.evaluation import BootstrapSettings
    from encoders.inference.evaluate import EvalConfig, evaluate_checkpoint
    from encoders.text import Embedder, EncoderSpec, label_entries, label_matrix
    from encoders.training import PretrainConfig, pretrain
    from kb_store.store import KnowledgeBase
    from knowledge.curated import import_pack

    started = time.perf_counter()
    state: CliState = ctx.obj or CliState()
    db = state.db or out / "ked.duckdb"
    out.mkdir(parents=True, exist_ok=True)

    typer.echo(f"1. knowledge base {db}: curated pack")
    with KnowledgeBase(db) as kb:
        imported = import_pack(kb)
        typer.echo(
            f"   pack {imported.pack_version}: {len(imported.added)} records added, "
            f"{imported.unchanged} already stored"
        )
        views = sorted(set(recipe.VIEWS) | set(QUERY_VIEWS))
        typer.echo(f"2. label vectors of the {VOCAB} labels, views {', '.join(views)}")
        matrix = label_matrix(Embedder(kb, EncoderSpec()), label_entries(kb, vocab=VOCAB), views)
        embedded = sum(s.embedded for s in matrix.summaries)
        typer.echo(
            f"   {embedded} texts embedded with all-MiniLM-L6-v2, "
            f"{sum(s.cache_hits for s in matrix.summaries)} from the cache"
        )

    run = out / "run"
    typer.echo(
        f"3. pretraining {encoder} on {data}, {epochs} epochs; held out: "
        f"{', '.join(HELD_OUT.values())}"
    )
    config = PretrainConfig(data=data, out=run, db=db, vocab=VOCAB, holdout=tuple(HELD_OUT))
    config = replace(
        config,
        model=replace(config.model, encoder=encoder),
        loop=replace(config.loop, epochs=epochs, batch_size=32),
    )
    with epoch_progress("pretrain", epochs) as on_step:
        result = pretrain(config, on_step=on_step)
    typer.echo(
        f"   best epoch {result.best_epoch}: validation macro AUROC {result.best_val_auroc:.3f} "
        f"over {len(result.train_labels)} training labels"
    )

    report = out / "report"
    typer.echo("4. zero-shot evaluation, knowledge view vs bare name")
    outcome = evaluate_checkpoint(
        EvalConfig(
            checkpoint=run,
            data=data,
            out=report,
            db=db,
            vocab=VOCAB,
            views=QUERY_VIEWS,
            bootstrap=BootstrapSettings(resamples=resamples),
        )
    )
    echo_outcome(outcome)
    _echo_held_out(outcome)

    typer.echo("5. explanation of a held-out diagnosis")
    _explain_one(run, data, db, report)
    typer.echo(f"done in {time.perf_counter() - started:.0f} s; report and plots in {report}")


def _echo_held_out(outcome: EvalOutcome) -> None:
    for label in HELD_OUT.values():
        cells = []
        for name, result in outcome.conditions.items():
            auroc = result.row(label).auroc.to_dict()
            value = "undefined" if auroc["value"] is None else f"{auroc['value']:.3f}"
            cells.append(f"{name} {value}")
        typer.echo(f"   held-out {label}: AUROC " + "; ".join(cells))


def _explain_one(run: Path, data: str, db: Path, report: Path) -> None:
    """Explain complete LBBB on the first evaluated recording that has it."""
    from encoders.datasets import open_manifest
    from encoders.ecg import open_source
    from encoders.explain import plot_explanation
    from encoders.inference.explain_recording import explain_recording
    from encoders.inference.zeroshot import ZeroShotClassifier
    from encoders.training import load_checkpoint
    from kb_store.store import KnowledgeBase

    manifest = open_manifest(data)
    table = manifest.table
    eval_split = "test" if (table["split"] == "test").any() else "val"
    rows = table.index[
        (table["split"] == eval_split) & table["labels"].map(lambda ls: "SCP:CLBBB" in ls)
    ]
    if len(rows) == 0:
        typer.echo("   no evaluated recording has complete LBBB; skipped")
        return
    spec, ref = manifest.ref(int(rows[0]))
    recording = open_source(spec).read(ref)
    checkpoint = load_checkpoint(run)
    with KnowledgeBase(db) as kb:
        classifier = ZeroShotClassifier(checkpoint, kb)
        explanation, window = explain_recording(classifier, recording, "SCP:CLBBB")
    path = plot_explanation(explanation, window, report / f"explain-{ref.record_id}-CLBBB.png")
    for line in explanation.text().splitlines()[:4]:
        typer.echo(f"   {line}")
    typer.echo(f"   plot: {path}")
