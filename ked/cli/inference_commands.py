"""``ked zeroshot``, ``encode``, ``eval`` and ``explain``: use a trained checkpoint on data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from ked.cli.common import RescanOption, open_kb, require_label_source, settings

if TYPE_CHECKING:
    import pandas as pd

    from encoders.ecg import Manifest
    from encoders.inference.evaluate import EvalOutcome
    from encoders.inference.zeroshot import LabelVectors, LLMProvider, ZeroShotClassifier
    from kb_store.store import KnowledgeBase

SplitOption = Annotated[str, typer.Option(help="train, val, test or all")]
# What the measured criteria check (encoders.inference.criteria), for the options' help.
_CRITERIA = (
    "rate, regularity, RR range, PR, QRS, QTc, axis, P waves, T waves, ST depression, Q waves, "
    "R' waves, voltages"
)


def _records(data: str, split: str, rescan: bool) -> Manifest:
    from encoders.datasets import open_manifest

    manifest = open_manifest(data, rescan=rescan)
    return manifest if split == "all" else manifest.split(split)


def zeroshot(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="run folder or .safetensors checkpoint")],
    data: Annotated[str, typer.Option(help="dataset spec")],
    out: Annotated[Path, typer.Option(help="predictions .csv or .parquet")],
    labels: Annotated[
        list[str] | None, typer.Option("--labels", help="any diagnoses, in words or codes")
    ] = None,
    vocab: Annotated[str | None, typer.Option(help="a vocabulary instead of --labels")] = None,
    view: Annotated[
        list[str] | None, typer.Option(help="knowledge views (default: the checkpoint's)")
    ] = None,
    ensemble: Annotated[
        str, typer.Option(help="several views: mean of 'vectors' or of 'scores'")
    ] = "vectors",
    measured_criteria: Annotated[
        bool,
        typer.Option(
            help=f"check what each label's knowledge states ({_CRITERIA}) against what is "
            "measured from the recording"
        ),
    ] = True,
    measurements: Annotated[
        Path | None,
        typer.Option(
            help="also write what is measured from each recording (rate, intervals, axis, P, "
            "T and ST per lead) to this .csv or .parquet"
        ),
    ] = None,
    split: SplitOption = "all",
    device: Annotated[str | None, typer.Option()] = None,
    rescan: RescanOption = False,
) -> None:
    """Score recordings against diagnoses written in words (zero-shot)."""
    from encoders.datasets import evaluation_preprocessing, record_label_strings, target_labels
    from encoders.ecg import ECGDataset
    from encoders.inference.zeroshot import ZeroShotClassifier, measurement_table, tidy
    from encoders.training import load_checkpoint
    from kb_store.connection import read_or_write

    require_label_source(vocab, labels)
    tables = [out] if measurements is None else [out, measurements]
    if ensemble not in ("vectors", "scores") or any(
        path.suffix not in (".csv", ".parquet") for path in tables
    ):
        raise typer.BadParameter(
            "--ensemble is vectors or scores; --out and --measurements are .csv or .parquet"
        )
    llm = _llm(ctx)
    model = load_checkpoint(checkpoint)
    records = _records(data, split, rescan)

    def label_side(kb: KnowledgeBase) -> tuple[ZeroShotClassifier, LabelVectors, dict[str, str]]:
        classifier = ZeroShotClassifier(model, kb, llm=llm, device=device)
        vectors = classifier.label_vectors(
            labels=labels or [], vocab=vocab, views=view or model.views
        )
        mapping = target_labels(kb, vectors.entries, record_label_strings(records))
        return classifier, vectors, mapping

    classifier, vectors, mapping = read_or_write(
        lambda read_only: open_kb(ctx, read_only=read_only), label_side, what="zero-shot run"
    )
    names = [e.label for e in vectors.entries]
    dataset = ECGDataset(
        records, evaluation_preprocessing(model.preprocessing), names, mapping.get, cache="memory"
    )
    measured = classifier.measure(dataset) if measurements is not None else None
    logits = classifier.scores(
        dataset,
        vectors,
        ensemble,  # type: ignore[arg-type]
        measured_criteria=measured_criteria,
        measured=measured,
    )
    _write_table(tidy(dataset.record_ids, vectors.entries, logits, dataset.targets), out)
    typer.echo(f"scored {len(dataset)} recordings x {len(names)} labels -> {out}")
    if measurements is not None and measured is not None:
        _write_table(measurement_table(dataset.record_ids, measured), measurements)
        typer.echo(f"measurements of {len(measured)} recordings -> {measurements}")
    if vectors.fallback:
        typer.echo(f"no knowledge, scored by bare name: {', '.join(vectors.fallback)}", err=True)


def _write_table(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False) if out.suffix == ".csv" else table.to_parquet(out, index=False)


def encode(
    checkpoint: Annotated[Path, typer.Option(help="run folder or .safetensors checkpoint")],
    data: Annotated[str, typer.Option(help="dataset spec")],
    out: Annotated[Path, typer.Option(help="embeddings .npy (+ .json sidecar) or .parquet")],
    space: Annotated[
        str, typer.Option(help="projected (label space) or pooled (encoder)")
    ] = "projected",
    split: SplitOption = "all",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[str | None, typer.Option()] = None,
    rescan: RescanOption = False,
) -> None:
    """One vector per recording, with record ids, for downstream tasks."""
    from encoders.datasets import evaluation_preprocessing
    from encoders.ecg import ECGDataset
    from encoders.inference.embedding import Space, embed_recordings, write_embeddings
    from encoders.training import load_checkpoint

    if space not in ("projected", "pooled"):
        raise typer.BadParameter("--space is projected or pooled")
    model = load_checkpoint(checkpoint)
    records = _records(data, split, rescan)
    dataset = ECGDataset(records, evaluation_preprocessing(model.preprocessing), [], lambda _: None)
    vectors = embed_recordings(
        model.model,
        dataset,
        space=cast(Space, space),
        batch_size=batch_size,
        device=device or "cpu",
    )
    meta = {"checkpoint": str(model.path), "space": space, "data": data, "split": split}
    write_embeddings(out, dataset.record_ids, vectors, meta)
    typer.echo(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {out}")


def eval_command(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="run folder or .safetensors checkpoint")],
    data: Annotated[str, typer.Option(help="dataset spec")],
    out: Annotated[Path, typer.Option(help="folder for predictions, report and plots")],
    labels: Annotated[list[str] | None, typer.Option("--labels", help="labels to evaluate")] = None,
    vocab: Annotated[str | None, typer.Option(help="a vocabulary instead of --labels")] = None,
    view: Annotated[
        list[str] | None, typer.Option(help="knowledge views (default: the checkpoint's)")
    ] = None,
    ablation: Annotated[bool, typer.Option(help="also evaluate the bare name view")] = True,
    measured_criteria: Annotated[
        bool,
        typer.Option(
            help="also report the knowledge condition with what each label's knowledge states "
            f"({_CRITERIA}) checked against the recording"
        ),
    ] = True,
    split: Annotated[
        str | None, typer.Option(help="evaluated split (default test, else val)")
    ] = None,
    threshold_split: Annotated[
        str | None, typer.Option(help="split that chooses thresholds")
    ] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    device: Annotated[str | None, typer.Option()] = None,
    rescan: RescanOption = False,
) -> None:
    """Zero-shot evaluation with bootstrap intervals and the knowledge-vs-name ablation."""
    from encoders.datasets import rescan_manifests
    from encoders.evaluation import BootstrapSettings
    from encoders.inference.evaluate import EvalConfig, evaluate_checkpoint

    require_label_source(vocab, labels)
    if rescan:
        rescan_manifests([data])
    outcome = evaluate_checkpoint(
        EvalConfig(
            checkpoint=checkpoint,
            data=data,
            out=out,
            db=settings(ctx).db,
            knowledge_statuses=settings(ctx).knowledge_statuses,
            vocab=vocab,
            labels=tuple(labels or ()),
            views=tuple(view) if view else None,
            ablation=ablation,
            measured_criteria=measured_criteria,
            eval_split=split,
            threshold_split=threshold_split,
            bootstrap=BootstrapSettings(resamples=resamples, seed=seed),
            llm=_llm(ctx),
            device=device,
        )
    )
    echo_outcome(outcome)
    typer.echo(f"report, predictions and plots in {out}")


def echo_outcome(outcome: EvalOutcome) -> None:
    """The macro AUROC table (95% bootstrap intervals) of an evaluation."""
    typer.echo(f"zero-shot macro AUROC on the {outcome.eval_split} split, 95% bootstrap intervals")
    width = max(len(c) for c, _, _ in outcome.summary_rows())
    for condition, group, value in outcome.summary_rows():
        typer.echo(f"  {condition:<{width}}  {group:<22}  {value}")
    if outcome.flags:
        typer.echo(f"  {len(outcome.flags)} labels flagged as close to another label in text space")


def _llm(ctx: typer.Context) -> LLMProvider | None:
    from knowledge.llm import LLMSettings

    config = settings(ctx)
    if not config.provider_configured:
        return None
    return LLMSettings(model=config.llm_model, base_url=config.base_url), config.api_key


def explain_command(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="run folder or .safetensors checkpoint")],
    data: Annotated[str, typer.Option(help="dataset spec")],
    record: Annotated[str, typer.Option(help="record id")],
    label: Annotated[str, typer.Option(help="the diagnosis, in words or as a code")],
    out: Annotated[Path, typer.Option(help="folder for the PNG and JSON")],
    view: Annotated[
        list[str] | None, typer.Option(help="knowledge views (default: the checkpoint's)")
    ] = None,
    device: Annotated[str | None, typer.Option()] = None,
    rescan: RescanOption = False,
) -> None:
    """Why a recording scores as it does for a diagnosis: criteria, leads, time regions, plot."""
    from encoders.datasets import open_manifest
    from encoders.ecg import open_source
    from encoders.explain import plot_explanation
    from encoders.inference.explain_recording import explain_recording
    from encoders.inference.zeroshot import ZeroShotClassifier
    from encoders.training import load_checkpoint
    from kb_store.connection import read_or_write

    model = load_checkpoint(checkpoint)
    manifest = open_manifest(data, rescan=rescan)
    rows = manifest.table.index[manifest.table["record_id"] == record]
    if len(rows) == 0:
        raise typer.BadParameter(f"no record {record!r} in {data}")
    spec, ref = manifest.ref(int(rows[0]))
    recording = open_source(spec).read(ref)
    llm = _llm(ctx)
    explanation, window = read_or_write(
        lambda read_only: open_kb(ctx, read_only=read_only),
        lambda kb: explain_recording(
            ZeroShotClassifier(model, kb, llm=llm, device=device),
            recording,
            label,
            views=view or model.views,
        ),
        what="explanation",
    )
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"explain-{record}-{''.join(c if c.isalnum() else '-' for c in label)}"
    plot_explanation(explanation, window, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(explanation.to_dict(), indent=2) + "\n")
    typer.echo(explanation.text())
    typer.echo(f"plot: {stem.with_suffix('.png')}")
