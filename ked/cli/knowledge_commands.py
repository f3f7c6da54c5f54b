"""``ked knowledge``: generate knowledge with an LLM, import the curated pack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from kb_store.store import KnowledgeBase
from ked.cli.common import open_kb, progress, settings
from knowledge.curated import import_pack
from knowledge.generate import GenerationSummary, generate_knowledge
from knowledge.llm import KnowledgeClient, LLMSettings

app = typer.Typer(help="Generate knowledge with an LLM, or import the curated pack.")


@app.command()
def generate(
    ctx: typer.Context,
    labels: Annotated[list[str] | None, typer.Argument(help="diagnosis names or codes")] = None,
    file: Annotated[Path | None, typer.Option(help="a file of labels, one per line")] = None,
    model: Annotated[str | None, typer.Option(help="LLM model (env KED_MODEL)")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 8,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 60.0,
    max_retries: Annotated[int, typer.Option(min=0, help="retries of a failed request")] = 5,
    max_repairs: Annotated[int, typer.Option(min=0, help="re-asks after invalid output")] = 2,
    force: Annotated[bool, typer.Option(help="regenerate even where knowledge exists")] = False,
) -> None:
    """Generate structured knowledge for diagnoses; skips those that already have it."""
    wanted = list(labels or [])
    if file is not None:
        wanted += [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    wanted = [label for label in wanted if label]
    if not wanted:
        raise typer.BadParameter("give at least one label, or --file")
    config = settings(ctx, base_url=base_url, llm_model=model)
    config.require_provider()
    llm = LLMSettings(
        model=config.llm_model,
        base_url=config.base_url,
        timeout_s=timeout,
        max_retries=max_retries,
        max_repairs=max_repairs,
        concurrency=concurrency,
    )
    with open_kb(ctx) as kb:
        summary = asyncio.run(_run(kb, llm, config.api_key, wanted, force))
    typer.echo(
        f"generated {len(summary.generated)}, skipped {len(summary.skipped)}, "
        f"failed {len(summary.failed)}; {summary.requests} requests "
        f"({summary.retries} retries), {summary.prompt_tokens + summary.completion_tokens} tokens "
        f"({summary.prompt_tokens} prompt, {summary.completion_tokens} completion), "
        f"{summary.wall_s:.1f} s (run {summary.run_id})"
    )
    for label in summary.failed:
        typer.echo(f"failed: {label} (see 'ked kb failures --run {summary.run_id}')", err=True)
    if not summary.ok:
        raise typer.Exit(1)


async def _run(
    kb: KnowledgeBase, llm: LLMSettings, api_key: str | None, labels: list[str], force: bool
) -> GenerationSummary:
    client = KnowledgeClient(llm, api_key=api_key)
    bar = progress(len(labels), "knowledge", unit="label")
    try:
        return await generate_knowledge(
            kb, client, labels, force=force, on_progress=lambda _label, _outcome: bar.update()
        )
    finally:
        bar.close()
        await client.aclose()


@app.command("import-pack")
def import_pack_command(
    ctx: typer.Context,
    vocab: Annotated[str | None, typer.Option(help="only this vocabulary's diagnoses")] = None,
) -> None:
    """Import the curated knowledge pack (idempotent)."""
    with open_kb(ctx) as kb:
        result = import_pack(kb, vocabulary=vocab)
    typer.echo(
        f"curated pack {result.pack_version}: {len(result.added)} records added, "
        f"{result.unchanged} unchanged"
    )
