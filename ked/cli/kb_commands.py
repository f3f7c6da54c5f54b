"""``ked kb``: list, show, export and import the knowledge base."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ked.cli.common import echo_json, open_kb

app = typer.Typer(help="Inspect, export and import the knowledge base.")


@app.command("list")
def list_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every diagnosis, its category and its current knowledge version and source."""
    with open_kb(ctx, read_only=True) as kb:
        rows = kb.diagnoses()
    if as_json:
        echo_json(
            [
                {"id": d.id, "name": d.name, "category": d.category, "version": v, "source": s}
                for d, v, s in rows
            ]
        )
        return
    for diagnosis, version, source in rows:
        knowledge = f"v{version} {source}" if version else "no knowledge"
        typer.echo(
            f"{diagnosis.id:5d}  {diagnosis.name:<60}  {diagnosis.category or '-':<12}  {knowledge}"
        )
    typer.echo(f"{len(rows)} diagnoses")


@app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="name, synonym or code")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    history: Annotated[bool, typer.Option(help="every version, not just the current")] = False,
) -> None:
    """One diagnosis: its knowledge, names, codes and provenance."""
    from kb_store.jsonl import entry
    from knowledge.views import render_view

    with open_kb(ctx, read_only=True) as kb:
        diagnosis = kb.resolve(name)
        if diagnosis is None:
            typer.echo(f"no diagnosis named {name!r}", err=True)
            raise typer.Exit(1)
        aliases = kb.aliases(diagnosis.id)
        versions = kb.history(diagnosis.id)
    shown = versions if history else versions[-1:]
    if as_json:
        echo_json(
            {
                "id": diagnosis.id,
                "name": diagnosis.name,
                "aliases": [{"alias": a, "kind": k} for a, k in aliases],
                "knowledge": [entry(stored) for stored in shown],
            }
        )
        return
    typer.echo(f"{diagnosis.name} (id {diagnosis.id}, {diagnosis.category})")
    typer.echo("aliases: " + ", ".join(f"{a} [{k}]" for a, k in aliases))
    if not shown:
        typer.echo("no knowledge yet")
    for stored in shown:
        prov = {k: v for k, v in asdict(stored.provenance).items() if v and k != "raw_response"}
        typer.echo(f"\nversion {stored.version}, {stored.created_at:%Y-%m-%d %H:%M} UTC")
        typer.echo("provenance: " + json.dumps(prov, sort_keys=True, default=str))
        typer.echo(f"summary: {stored.record.summary}")
        typer.echo("criteria:")
        for i, criterion in enumerate(stored.record.criteria, 1):
            typer.echo(f"  {i}. {criterion}")
        typer.echo("rhythm: " + render_view(stored.record, "rhythm"))
        typer.echo("morphology: " + render_view(stored.record, "morphology"))
        for d in stored.record.differentials:
            typer.echo(f"differential: {d.name} - {d.distinguishing_features}")
        for caveat in stored.record.caveats:
            typer.echo(f"caveat: {caveat}")


@app.command("export")
def export_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="output .jsonl file")],
    all_versions: Annotated[bool, typer.Option(help="every version, not just current")] = False,
) -> None:
    """Export knowledge with provenance as JSON Lines."""
    from kb_store.jsonl import export_jsonl

    with open_kb(ctx, read_only=True) as kb:
        count = export_jsonl(kb, out, all_versions=all_versions)
    typer.echo(f"wrote {count} records to {out}")


@app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a .jsonl file from 'ked kb export'")],
) -> None:
    """Import JSON Lines knowledge (validated; idempotent)."""
    from kb_store.jsonl import import_jsonl

    with open_kb(ctx) as kb:
        result = import_jsonl(kb, file)
    typer.echo(f"imported {result.added} records, {result.unchanged} unchanged")


@app.command()
def failures(
    ctx: typer.Context,
    run: Annotated[int | None, typer.Option(help="only this run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Recorded generation failures: label, attempt, kind and reason."""
    with open_kb(ctx, read_only=True) as kb:
        rows = kb.failures(run)
    if as_json:
        echo_json([asdict(f) for f in rows])
        return
    for f in rows:
        typer.echo(f"run {f.run_id}  {f.label}  attempt {f.attempt}  {f.error_kind}: {f.message}")
    typer.echo(f"{len(rows)} failures")
