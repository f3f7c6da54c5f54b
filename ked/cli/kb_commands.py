"""``ked kb``: list, show, review, compare, export and import the knowledge base."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from encoders.text import EncoderSpec
from ked.cli.common import echo_json, open_kb
from ked.cli.text_options import text_encoder_options

if TYPE_CHECKING:
    from kb_store.store import Status

app = typer.Typer(help="Inspect, review, export and import the knowledge base.")

NameArgument = Annotated[str, typer.Argument(help="name, synonym or code")]
VersionOption = Annotated[int | None, typer.Option(help="knowledge version (default: the latest)")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
FromOption = Annotated[
    int | None, typer.Option("--from", help="old version (default: the one before --to)")
]
ToOption = Annotated[int | None, typer.Option("--to", help="new version (default: the latest)")]


@app.command("list")
def list_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every diagnosis, its category and its latest knowledge version, source and status."""
    with open_kb(ctx, read_only=True) as kb:
        rows = kb.diagnoses()
        statuses = kb.latest_statuses()
    if as_json:
        echo_json(
            [
                {
                    "id": d.id,
                    "name": d.name,
                    "category": d.category,
                    "version": v,
                    "source": s,
                    "status": statuses.get(d.id),
                }
                for d, v, s in rows
            ]
        )
        return
    for diagnosis, version, source in rows:
        status = statuses.get(diagnosis.id)
        knowledge = f"v{version} {source} {status}" if version else "no knowledge"
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
        typer.echo(
            f"\nversion {stored.version}, {stored.created_at:%Y-%m-%d %H:%M} UTC, {stored.status}"
            + (f" ({stored.review_note})" if stored.review_note else "")
        )
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


@app.command()
def review(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Knowledge versions waiting for review, with their findings against the curated pack."""
    from knowledge.check import Severity, check_stored
    from knowledge.curated import load_pack

    with open_kb(ctx, read_only=True) as kb:
        checks = check_stored(kb, kb.by_status("proposed"), load_pack())
    rows = [
        {
            "name": c.stored.diagnosis.name,
            "version": c.stored.version,
            "source": c.stored.provenance.source,
            "model": c.stored.provenance.model,
            "created_at": c.stored.created_at,
            "curated": c.curated is not None,
            "contradictions": c.count(Severity.CONTRADICTION),
            "deviations": c.count(Severity.DEVIATION),
        }
        for c in checks
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        found = (
            f"{row['contradictions']} contradictions, {row['deviations']} deviations"
            if row["curated"]
            else "no curated record to check against"
        )
        typer.echo(
            f"{row['name']:<50}  v{row['version']:<3}  {row['source']:<8}  "
            f"{row['model'] or '-':<20}  {found}"
        )
    typer.echo(
        f"{len(rows)} versions wait for review: 'ked kb check NAME' shows the findings, "
        "'ked kb accept NAME' or 'ked kb reject NAME' decides"
    )


def _set_status(
    ctx: typer.Context, name: str, status: Status, version: int | None, note: str | None
) -> None:
    with open_kb(ctx) as kb:
        stored = kb.set_status(kb.named(name).id, status, version=version, note=note)
        usable = kb.usable(stored.diagnosis.id)
    now_used = f"v{usable.version}" if usable else "no knowledge"
    typer.echo(
        f"{stored.diagnosis.name} v{stored.version}: {status}; "
        f"embeddings, training and zero-shot now use {now_used} "
        f"({'/'.join(kb.usable_statuses)} knowledge)"
    )


@app.command()
def accept(
    ctx: typer.Context,
    name: NameArgument,
    version: VersionOption = None,
    note: Annotated[str | None, typer.Option(help="reviewer's note")] = None,
) -> None:
    """Accept a knowledge version: it may feed embeddings, training and zero-shot."""
    _set_status(ctx, name, "accepted", version, note)


@app.command()
def reject(
    ctx: typer.Context,
    name: NameArgument,
    version: VersionOption = None,
    note: Annotated[str | None, typer.Option(help="why it was rejected")] = None,
) -> None:
    """Reject a knowledge version: it never feeds embeddings, training or zero-shot."""
    _set_status(ctx, name, "rejected", version, note)


@app.command()
def check(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(help="diagnoses (default: every proposed LLM version)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compare LLM knowledge with the curated record of the same diagnosis, field by field."""
    from knowledge.check import Severity, check_stored, llm_versions_to_check
    from knowledge.curated import load_pack

    with open_kb(ctx, read_only=True) as kb:
        checks = check_stored(kb, llm_versions_to_check(kb, names or []), load_pack())
    if as_json:
        echo_json(
            [
                {
                    "name": c.stored.diagnosis.name,
                    "version": c.stored.version,
                    "status": c.stored.status,
                    "curated": c.curated is not None,
                    "findings": [asdict(f) for f in c.findings],
                }
                for c in checks
            ]
        )
        return
    for c in checks:
        head = f"{c.stored.diagnosis.name} v{c.stored.version} ({c.stored.status})"
        if c.curated is None:
            typer.echo(f"{head}: no curated record to check against")
            continue
        typer.echo(
            f"{head}: {c.count(Severity.CONTRADICTION)} contradictions, "
            f"{c.count(Severity.DEVIATION)} deviations"
        )
        for finding in c.findings:
            typer.echo(f"  {finding.describe()}")
    typer.echo(f"{len(checks)} versions checked")


@app.command()
def diff(
    ctx: typer.Context,
    name: NameArgument,
    from_version: FromOption = None,
    to_version: ToOption = None,
    as_json: JsonOption = False,
) -> None:
    """Field-by-field differences between two knowledge versions of a diagnosis."""
    from knowledge.diff import diff_records

    with open_kb(ctx, read_only=True) as kb:
        diagnosis = kb.named(name)
        old, new = kb.versions_to_compare(diagnosis.id, from_version, to_version)
    changes = diff_records(old.record, new.record)
    if as_json:
        echo_json(
            {
                "name": diagnosis.name,
                "from": old.version,
                "to": new.version,
                "changes": [asdict(c) for c in changes],
            }
        )
        return
    typer.echo(
        f"{diagnosis.name}: v{old.version} ({old.provenance.source}, {old.status}) -> "
        f"v{new.version} ({new.provenance.source}, {new.status})"
    )
    for change in changes:
        typer.echo(f"  {change.describe()}")
    typer.echo(f"{len(changes)} changes")


@app.command()
@text_encoder_options()
def drift(
    ctx: typer.Context,
    text: EncoderSpec,
    names: Annotated[list[str] | None, typer.Argument(help="diagnoses to compare")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="every diagnosis with more than one version")
    ] = False,
    from_version: FromOption = None,
    to_version: ToOption = None,
    view: Annotated[list[str] | None, typer.Option(help="views (default: every view)")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="also score zero-shot with it (its own text encoder is used)"),
    ] = None,
    data: Annotated[str | None, typer.Option(help="with --checkpoint: evaluation dataset")] = None,
    split: Annotated[
        str | None, typer.Option(help="with --data: split (default test, else val, else all)")
    ] = None,
    device: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOption = False,
) -> None:
    """How far label vectors moved between knowledge versions, per view, and with a checkpoint
    and data, what it did to per-label zero-shot AUROC."""
    from encoders.datasets import open_manifest
    from encoders.inference.drift import auroc_drift, vector_drift, version_pairs
    from encoders.inference.zeroshot import ZeroShotClassifier
    from encoders.models.checkpoint import load_checkpoint
    from encoders.text import Embedder
    from knowledge.views import VIEWS

    if bool(names) == every:
        raise typer.BadParameter("give diagnosis names or --all, not both")
    if (checkpoint is None) != (data is None):
        raise typer.BadParameter("--checkpoint and --data go together")
    views = view or list(VIEWS)
    with open_kb(ctx) as kb:
        pairs = version_pairs(kb, names or [], from_version=from_version, to_version=to_version)
        classifier = (
            ZeroShotClassifier(load_checkpoint(checkpoint), kb, device=device)
            if checkpoint is not None
            else None
        )
        embedder = classifier.embedder if classifier else Embedder(kb, text, device=device)
        moved = vector_drift(embedder, pairs, views)
        aurocs = (
            auroc_drift(classifier, open_manifest(data), pairs, views, split)
            if classifier is not None and data is not None
            else []
        )
    if as_json:
        echo_json({"vectors": [asdict(d) for d in moved], "auroc": [asdict(a) for a in aurocs]})
        return
    typer.echo(f"{'diagnosis':<50}  {'view':<12}  versions  cosine  text")
    for d in moved:
        versions = f"v{d.old_version}->v{d.new_version}"
        changed = "changed" if d.text_changed else "same"
        typer.echo(f"{d.diagnosis:<50}  {d.view:<12}  {versions:<8}  {d.cosine:6.4f}  {changed}")
    if aurocs:
        typer.echo(f"\nzero-shot AUROC on {data} ({'+'.join(views)}):")
        for a in aurocs:
            old = "-" if a.old_auroc is None else f"{a.old_auroc:.3f}"
            new = "-" if a.new_auroc is None else f"{a.new_auroc:.3f}"
            typer.echo(
                f"{a.diagnosis:<50}  v{a.old_version} {old}  v{a.new_version} {new}  "
                f"({a.positives} positive, {a.negatives} negative)"
            )
