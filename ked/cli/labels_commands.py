"""``ked labels``: label-space diagnostics, i.e. which labels the text side can tell apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from encoders.evaluation.label_space import DEFAULT_THRESHOLD
from encoders.text import EncoderSpec
from ked.cli.common import open_kb, require_label_source
from ked.cli.embed_commands import BatchOption, DeviceOption, EmbedMissingOption
from ked.cli.text_options import text_encoder_options
from knowledge.views import VIEWS

if TYPE_CHECKING:
    from encoders.evaluation.label_space import LabelSpace, ViewComparison
    from encoders.text import LabelEntry

app = typer.Typer(help="Label-space diagnostics: how far apart the label vectors are.")

DEFAULT_VIEWS = ("name", "full")


@app.callback()
def labels() -> None:
    """Label-space diagnostics: zero-shot can only separate what the label vectors separate."""


def _views(view: list[str] | None) -> list[str]:
    views = view or list(DEFAULT_VIEWS)
    for name in views:
        unknown = [part for part in name.split("+") if part not in VIEWS]
        if unknown:
            raise typer.BadParameter(
                f"unknown view {unknown[0]!r} in {name!r}; choose from {', '.join(VIEWS)}, "
                "or join several with '+'"
            )
    return views


def _display(entries: list[LabelEntry]) -> dict[str, str]:
    return {
        e.label: e.label if e.diagnosis in (None, e.label) else f"{e.label} ({e.diagnosis})"
        for e in entries
    }


def _print_view(space: LabelSpace, names: dict[str, str], top: int, threshold: float) -> None:
    stats = space.stats(threshold)
    typer.echo(
        f"view {space.view}: {len(space.names)} labels, mean off-diagonal cosine "
        f"{stats.mean_cosine:.3f}, max {stats.max_cosine:.3f}; {stats.pairs_above} pairs and "
        f"{stats.labels_flagged} labels with a neighbour at cosine >= {threshold}"
    )
    for pair in space.pairs(top):
        same = "  [same diagnosis]" if pair.same_diagnosis else ""
        typer.echo(f"  {pair.cosine:.3f}  {names[pair.first]}  ~  {names[pair.second]}{same}")


def _print_comparison(comparison: ViewComparison, names: dict[str, str], top: int) -> None:
    views = [s.view for s in comparison.stats]
    typer.echo(
        f"comparison (reference view {comparison.reference}; threshold {comparison.threshold}):"
    )
    header = ("view", "mean", "max", "pairs", "flagged", "separated")
    typer.echo("  {:<24} {:>6} {:>6} {:>6} {:>8} {:>9}".format(*header))
    for s in comparison.stats:
        separated = "-" if s.reference_pairs_separated is None else s.reference_pairs_separated
        typer.echo(
            f"  {s.view:<24} {s.mean_cosine:6.3f} {s.max_cosine:6.3f} {s.pairs_above:6d} "
            f"{s.labels_flagged:8d} {separated!s:>9}"
        )
    if not comparison.pairs:
        return
    typer.echo(
        f"  {len(comparison.pairs)} pairs at >= {comparison.threshold} in "
        f"{comparison.reference}: cosine (rank among all pairs) per view"
    )
    for pair in comparison.pairs[:top]:
        cells = "  ".join(f"{v} {pair.cosine[v]:.3f} ({pair.rank[v]})" for v in views)
        same = "  [same diagnosis]" if pair.same_diagnosis else ""
        typer.echo(f"  {names[pair.first]}  ~  {names[pair.second]}: {cells}{same}")


@app.command()
@text_encoder_options()
def similarity(
    ctx: typer.Context,
    text: EncoderSpec,
    vocab: Annotated[str | None, typer.Option(help="a vocabulary's labels, in its order")] = None,
    labels: Annotated[list[str] | None, typer.Option("--labels", help="labels to compare")] = None,
    view: Annotated[
        list[str] | None,
        typer.Option(
            help=f"view ({', '.join(VIEWS)}), or views joined by '+' (averaged); repeat to "
            f"compare views; default {' and '.join(DEFAULT_VIEWS)}; the first is the reference"
        ),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="most similar pairs to print per view")] = 20,
    threshold: Annotated[
        float, typer.Option(help="flag pairs and labels at or above this cosine")
    ] = DEFAULT_THRESHOLD,
    out: Annotated[
        Path | None, typer.Option(help="folder for heatmap PNGs and label_similarity.json")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="compare in the space this model scores in (its text encoder; label vectors "
            "centred and adapted as it does); the text encoder options are then ignored"
        ),
    ] = None,
    device: DeviceOption = None,
    batch_size: BatchOption = 64,
    embed_missing: EmbedMissingOption = True,
) -> None:
    """Cosine similarity of label vectors: the most confusable pairs per view, views compared."""
    from encoders.evaluation.label_space import compare_views
    from encoders.inference.label_spaces import label_spaces

    require_label_source(vocab, labels)
    views = _views(view)
    with open_kb(ctx, read_only=not embed_missing) as kb:
        found = label_spaces(
            kb,
            views,
            vocab=vocab,
            labels=labels or [],
            text=text,
            checkpoint=checkpoint,
            device=device,
            batch_size=batch_size,
            embed_missing=embed_missing,
        )
    spaces = found.spaces
    names = _display(found.entries)
    for space in spaces.values():
        _print_view(space, names, top, threshold)
        typer.echo("")
    comparison = compare_views(spaces, threshold=threshold)
    _print_comparison(comparison, names, top)
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    order = next(iter(spaces.values())).cluster_order()
    for v, space in spaces.items():
        path = space.write_heatmap(out / f"similarity_{v.replace('+', '-')}.png", order)
        typer.echo(f"wrote {path}")
    report = {
        "vocab": vocab,
        "encoder_fingerprint": found.fingerprint,
        "encoder": found.encoder,
        "heatmap_order": f"average-linkage clustering of the {views[0]} view, for every view",
        "views": {v: space.to_dict(top, threshold) for v, space in spaces.items()},
        "comparison": comparison.to_dict(),
    }
    path = out / "label_similarity.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    typer.echo(f"wrote {path}")
