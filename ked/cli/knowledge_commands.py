"""``ked knowledge``: generate knowledge with an LLM, import the curated pack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ked.cli import knowledge_batch_commands
from ked.cli.common import open_kb, progress, settings

if TYPE_CHECKING:
    from kb_store.store import KnowledgeBase
    from knowledge.generate import GenerationSummary
    from knowledge.llm import LLMSettings

app = typer.Typer(help="Generate knowledge with an LLM, or import the curated pack.")
app.add_typer(knowledge_batch_commands.app, name="batch")

_DETAIL_CHARS = 160  # a failure's reason on the account line; 'ked kb failures' has it whole


@app.command()
def generate(
    ctx: typer.Context,
    labels: Annotated[list[str] | None, typer.Argument(help="diagnosis names or codes")] = None,
    file: Annotated[
        Path | None, typer.Option(help="a file of labels, one per line (blank lines skipped)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="LLM model (env KED_MODEL)")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 8,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 60.0,
    max_retries: Annotated[int, typer.Option(min=0, help="retries of a failed request")] = 5,
    max_repairs: Annotated[int, typer.Option(min=0, help="re-asks after invalid output")] = 2,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest answer, in tokens")] = 4096,
    context_tokens: Annotated[
        int | None,
        typer.Option(
            min=1, help="the server's context size; repair turns are fitted to it (else learnt)"
        ),
    ] = None,
    prompt: Annotated[
        str,
        typer.Option(
            help="prompt variant: full (JSON schema and a worked example) or compact "
            "(schema outline, for small local models)"
        ),
    ] = "full",
    force: Annotated[bool, typer.Option(help="regenerate even where knowledge exists")] = False,
) -> None:
    """Generate structured knowledge for diagnoses; skips those that already have it.

    Prints what became of every label (stored, present, duplicate or failed with the reason)
    and the output mode the server ended up with; exits 1 when any label failed.
    """
    from knowledge.generate import check_labels
    from knowledge.llm import LLMSettings
    from knowledge.prompting import PROMPT_VARIANTS

    if prompt not in PROMPT_VARIANTS:
        raise typer.BadParameter(f"--prompt is one of {', '.join(PROMPT_VARIANTS)}")
    wanted = list(labels or [])
    if file is not None:
        lines = file.read_text(encoding="utf-8").splitlines()
        wanted += [line for line in lines if line.strip()]
    if not wanted:
        raise typer.BadParameter("give at least one label, or --file")
    check_labels(wanted)  # a blank label is an error before the knowledge base is opened
    config = settings(ctx, base_url=base_url, llm_model=model)
    config.require_provider()
    llm = LLMSettings(
        model=config.llm_model,
        base_url=config.base_url,
        timeout_s=timeout,
        max_retries=max_retries,
        max_repairs=max_repairs,
        concurrency=concurrency,
        max_tokens=max_tokens,
        context_tokens=context_tokens,
        prompt=prompt,  # checked against PROMPT_VARIANTS above
    )
    with open_kb(ctx) as kb:
        summary = asyncio.run(_run(kb, llm, config.api_key, wanted, force))
    _echo_account(summary)
    if not summary.ok:
        typer.echo(
            f"{len(summary.failed)} of {len(summary.results)} labels failed "
            f"(details: 'ked kb failures --run {summary.run_id}')",
            err=True,
        )
        raise typer.Exit(1)


async def _run(
    kb: KnowledgeBase, llm: LLMSettings, api_key: str | None, labels: list[str], force: bool
) -> GenerationSummary:
    from knowledge.generate import generate_knowledge
    from knowledge.llm import KnowledgeClient

    client = KnowledgeClient(llm, api_key=api_key)
    bar = progress(len(labels), "knowledge", unit="label")
    try:
        return await generate_knowledge(
            kb, client, labels, force=force, on_progress=lambda _label, _status: bar.update()
        )
    finally:
        bar.close()
        await client.aclose()


def _echo_account(summary: GenerationSummary) -> None:
    """One line per requested label, then the totals and the server's output mode."""
    for result in summary.results:
        detail = " ".join(result.detail.split())
        if len(detail) > _DETAIL_CHARS:
            detail = detail[: _DETAIL_CHARS - 3] + "..."
        typer.echo(f"{result.status:<9}  {result.label}" + (f": {detail}" if detail else ""))
    tokens = summary.prompt_tokens + summary.completion_tokens
    typer.echo(
        f"stored {len(summary.generated)}, already present {len(summary.skipped)}, "
        f"duplicates {len(summary.labels('duplicate'))}, failed {len(summary.failed)}; "
        f"{summary.requests} requests ({summary.retries} retries), {tokens} tokens "
        f"({summary.prompt_tokens} prompt, {summary.completion_tokens} completion), "
        f"{summary.wall_s:.1f} s (run {summary.run_id})"
    )
    changes = f" (after {'; '.join(summary.mode_changes)})" if summary.mode_changes else ""
    typer.echo(f"output mode: {summary.output_mode}{changes}")


@app.command("import-pack")
def import_pack_command(
    ctx: typer.Context,
    vocab: Annotated[str | None, typer.Option(help="only this vocabulary's diagnoses")] = None,
) -> None:
    """Import the curated knowledge pack (idempotent)."""
    from knowledge.curated import import_pack

    with open_kb(ctx) as kb:
        result = import_pack(kb, vocabulary=vocab)
    typer.echo(
        f"curated pack {result.pack_version}: {len(result.added)} records added, "
        f"{result.unchanged} unchanged"
    )
