"""``ked report``: a browsable, self-contained HTML site of the knowledge base and results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from encoders.evaluation.label_space import DEFAULT_THRESHOLD
from encoders.text import EncoderSpec
from ked.cli.common import open_kb, progress
from ked.cli.embed_commands import DeviceOption
from ked.cli.text_options import text_encoder_options

if TYPE_CHECKING:
    from encoders.evaluation.label_space import LabelSpace
    from encoders.report import Site
    from kb_store.store import KnowledgeBase


@text_encoder_options()
def report(
    ctx: typer.Context,
    text: EncoderSpec,
    out: Annotated[Path, typer.Option(help="folder for the site (index.html and its pages)")],
    eval_folder: Annotated[
        Path | None, typer.Option("--eval", help="a `ked eval --out` folder to show")
    ] = None,
    explain: Annotated[
        Path | None, typer.Option(help="a `ked explain --out` folder to show")
    ] = None,
    vocab: Annotated[
        str | None, typer.Option(help="label space of a vocabulary's labels (default: evaluated)")
    ] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--labels", help="label space of these labels")
    ] = None,
    view: Annotated[
        str, typer.Option(help="view of the label space, or views joined by '+' (averaged)")
    ] = "full",
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="label space as this model scores it (its text encoder; vectors centred and "
            "adapted as it does); the text encoder options are then ignored"
        ),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="most confusable pairs to list")] = 20,
    threshold: Annotated[
        float, typer.Option(help="mark pairs at or above this cosine")
    ] = DEFAULT_THRESHOLD,
    device: DeviceOption = None,
) -> None:
    """Write a static HTML report: knowledge with provenance, versions and diffs; the label
    space; an evaluation's per-label table and ROC curves; explanations. No server needed."""
    from encoders.inference.label_spaces import label_spaces
    from encoders.report import read_evaluation, read_explanations, write_site
    from kb_store.connection import read_or_write

    if vocab is not None and labels:
        raise typer.BadParameter("give at most one of --vocab and --labels")
    evaluation = read_evaluation(eval_folder) if eval_folder is not None else None
    explanations = read_explanations(explain) if explain is not None else []
    chosen = labels or (evaluation.labels if evaluation is not None and vocab is None else [])

    def build(kb: KnowledgeBase) -> tuple[Site, LabelSpace | None]:
        space = None
        if vocab is not None or len(chosen) >= 2:
            space = label_spaces(
                kb,
                [view],
                vocab=vocab,
                labels=chosen,
                text=text,
                checkpoint=checkpoint,
                device=device,
                fallback_to_name=True,
            ).spaces[view]
        with progress(0, "rendering pages", unit="page") as bar:
            site = write_site(
                out,
                kb=kb,
                evaluation=evaluation,
                explanations=explanations,
                label_space=space,
                top_pairs=top,
                threshold=threshold,
                on_page=lambda _: bar.update(1),
            )
        return site, space

    # read-only unless label texts must be embedded first: other jobs can share the file
    site, space = read_or_write(
        lambda read_only: open_kb(ctx, read_only=read_only), build, what="report"
    )
    parts = [f"{site.diagnoses} diagnoses"]
    parts += ["label space"] if space is not None else []
    parts += ["evaluation"] if evaluation is not None else []
    parts += [f"{len(explanations)} explanations"] if explanations else []
    typer.echo(f"wrote {len(site.pages)} pages ({', '.join(parts)}); open {site.index}")
