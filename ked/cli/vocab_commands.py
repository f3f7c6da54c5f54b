"""``ked vocab``: the label vocabularies and how they resolve to diagnoses."""

from __future__ import annotations

from typing import Annotated

import typer

from ked.cli.common import echo_json, open_kb
from knowledge.vocab import list_vocabularies, load_vocabulary

app = typer.Typer(help="Label vocabularies and their diagnoses.")


@app.command("list")
def list_command() -> None:
    """The vocabularies ked ships."""
    for name in list_vocabularies():
        vocab = load_vocabulary(name)
        typer.echo(f"{name:<12}  {len(vocab):4d} labels  {vocab.description}")


@app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="vocabulary name")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each label, its code, the diagnosis it resolves to, and whether knowledge exists."""
    vocab = load_vocabulary(name)
    with open_kb(ctx, read_only=True) as kb:
        rows = []
        for label in vocab.labels:
            diagnosis = kb.resolve(label.query)
            current = kb.current(diagnosis.id) if diagnosis else None
            rows.append(
                {
                    "label": label.label,
                    "code": label.code,
                    "diagnosis": diagnosis.name if diagnosis else None,
                    "knowledge": f"v{current.version} {current.provenance.source}"
                    if current
                    else None,
                }
            )
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            typer.echo(
                f"{row['label']:<50}  {row['code'] or '-':<16}  "
                f"{row['diagnosis'] or 'UNRESOLVED':<50}  {row['knowledge'] or 'no knowledge'}"
            )
    missing = sum(1 for row in rows if row["knowledge"] is None)
    typer.echo(f"{len(rows)} labels, {missing} missing knowledge")
    if missing:
        raise typer.Exit(1)
