"""``ked knowledge batch``: knowledge generation through the OpenAI Batch API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ked.cli.common import open_kb, settings

if TYPE_CHECKING:
    from knowledge.batch_collect import CollectSummary
    from knowledge.batch_server import BatchServer

app = typer.Typer(
    help="Generate knowledge through the OpenAI Batch API: prepare, submit, status, "
    "collect, repair."
)

RequestsArg = Annotated[Path, typer.Argument(help="the request JSONL written by 'prepare'")]
BaseUrlOption = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
]
BatchOption = Annotated[
    str | None, typer.Option("--batch", help="a batch id of this file (default: the latest)")
]
TimeoutOption = Annotated[float, typer.Option(help="seconds per request to the server")]
_DETAIL_CHARS = 160


@app.command()
def prepare(
    ctx: typer.Context,
    labels: Annotated[list[str] | None, typer.Argument(help="diagnosis names or codes")] = None,
    out: Annotated[Path, typer.Option(help="the request JSONL to write")] = Path("batch.jsonl"),
    file: Annotated[
        Path | None, typer.Option(help="a file of labels, one per line (blank lines skipped)")
    ] = None,
    vocab: Annotated[str | None, typer.Option(help="a vocabulary's labels")] = None,
    model: Annotated[str | None, typer.Option(help="LLM model (env KED_MODEL)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest answer, in tokens")] = 4096,
    max_repairs: Annotated[
        int, typer.Option(min=0, help="repair batches allowed per label ('repair')")
    ] = 2,
    prompt: Annotated[str, typer.Option(help="prompt variant: full or compact")] = "full",
    output_mode: Annotated[
        str, typer.Option(help="json_schema, json_object or text (response_format)")
    ] = "json_schema",
    force: Annotated[bool, typer.Option(help="include labels that have knowledge")] = False,
) -> None:
    """Write one chat-completions request per diagnosis without knowledge, and its state."""
    from knowledge.batch import prepare_batch, vocabulary_labels
    from knowledge.generate import check_labels
    from knowledge.llm import LLMSettings
    from knowledge.llm_errors import OutputMode
    from knowledge.prompting import PROMPT_VARIANTS

    if prompt not in PROMPT_VARIANTS:
        raise typer.BadParameter(f"--prompt is one of {', '.join(PROMPT_VARIANTS)}")
    if output_mode not in set(OutputMode):
        raise typer.BadParameter(f"--output-mode is one of {', '.join(OutputMode)}")
    wanted = list(labels or [])
    contexts: dict[str, str] = {}
    if file is not None:
        wanted += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if vocab is not None:
        try:
            vocab_labels, contexts = vocabulary_labels(vocab)
        except KeyError as exc:
            raise typer.BadParameter(str(exc.args[0])) from None
        wanted += vocab_labels
    if not wanted:
        raise typer.BadParameter("give at least one label, --file or --vocab")
    check_labels(wanted)
    config = settings(ctx, llm_model=model)
    llm = LLMSettings(
        model=config.llm_model,
        max_tokens=max_tokens,
        max_repairs=max_repairs,
        prompt=prompt,  # checked against PROMPT_VARIANTS above
    )
    with open_kb(ctx) as kb:
        prepared = prepare_batch(
            kb, wanted, out, llm, mode=OutputMode(output_mode), contexts=contexts, force=force
        )
    skipped = f"{len(prepared.present)} already have knowledge"
    skipped += f", {len(prepared.duplicates)} duplicates"
    if prepared.state is None:
        typer.echo(f"nothing to prepare: {skipped}")
        return
    typer.echo(
        f"wrote {len(prepared.state.items)} requests to {out} "
        f"(state: {prepared.state.state_path.name}); {skipped}"
    )


@app.command()
def submit(
    ctx: typer.Context,
    requests: RequestsArg,
    base_url: BaseUrlOption = None,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Upload the request file and create a batch from it."""
    from knowledge.batch import submit_batch

    batch = asyncio.run(submit_batch(requests, _server(ctx, base_url, timeout)))
    typer.echo(f"batch {batch.id}: {batch.status} (input file {batch.input_file_id})")


@app.command()
def status(
    ctx: typer.Context,
    requests: RequestsArg,
    base_url: BaseUrlOption = None,
    batch: BatchOption = None,
    timeout: TimeoutOption = 60.0,
) -> None:
    """How the batch is doing: its status, request counts and errors."""
    from knowledge.batch import batch_status

    found = asyncio.run(batch_status(requests, _server(ctx, base_url, timeout), batch))
    typer.echo(
        f"batch {found.id}: {found.status}; {found.completed} of {found.total} requests "
        f"answered, {found.failed} failed"
    )
    for error in found.errors:
        typer.echo(f"error: {error}")


@app.command()
def collect(
    ctx: typer.Context,
    requests: RequestsArg,
    base_url: BaseUrlOption = None,
    batch: BatchOption = None,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Store a finished batch's valid answers and record the rest as failures.

    Collecting again stores nothing twice. Exits 1 when any answer is invalid or missing
    ('repair' prepares the follow-up batch).
    """
    from knowledge.batch_collect import collect_batch
    from knowledge.batch_files import load_state

    server, state = _server(ctx, base_url, timeout), load_state(requests)
    with open_kb(ctx) as kb:
        summary = asyncio.run(collect_batch(kb, state, server, batch))
    _echo_collected(summary)
    if not summary.ok:
        missing = sum(summary.count(s) for s in ("invalid", "unanswered", "failed"))
        typer.echo(
            f"{missing} of {len(summary.outcomes)} requests not stored (details: 'ked kb "
            f"failures --run {summary.run_id}'; follow-up: 'ked knowledge batch repair "
            f"{requests}')",
            err=True,
        )
        raise typer.Exit(1)


def _server(ctx: typer.Context, base_url: str | None, timeout: float) -> BatchServer:
    from knowledge.batch_server import BatchServer

    config = settings(ctx, base_url=base_url)
    config.require_provider()
    return BatchServer(config.base_url, config.api_key, timeout_s=timeout)


def _echo_collected(summary: CollectSummary) -> None:
    """One line per request, then the counts."""
    for outcome in summary.outcomes:
        detail = " ".join(": ".join(p for p in (outcome.kind, outcome.detail) if p).split())
        if len(detail) > _DETAIL_CHARS:
            detail = detail[: _DETAIL_CHARS - 3] + "..."
        typer.echo(f"{outcome.status:<10}  {outcome.label}" + (f": {detail}" if detail else ""))
    before = summary.count("collected")
    if summary.run_id is None:
        typer.echo(
            f"batch {summary.batch_id} ({summary.batch_status}): nothing new, "
            f"{before} requests were collected before; nothing stored"
        )
        return
    counts = ", ".join(
        f"{status} {summary.count(status)}"
        for status in ("stored", "invalid", "unanswered", "failed")
    )
    tokens = summary.prompt_tokens + summary.completion_tokens
    typer.echo(
        f"batch {summary.batch_id} ({summary.batch_status}): {counts}, collected before "
        f"{before}; {tokens} tokens (run {summary.run_id})"
    )


@app.command()
def repair(
    ctx: typer.Context,
    requests: RequestsArg,
    out: Annotated[
        Path | None, typer.Option(help="the follow-up JSONL (default: <requests>-repair.jsonl)")
    ] = None,
) -> None:
    """Write a follow-up batch: repair turns for invalid answers, unanswered requests again."""
    from knowledge.batch import prepare_repair

    target = out or requests.with_name(f"{requests.stem}-repair.jsonl")
    with open_kb(ctx, read_only=True) as kb:
        plan = prepare_repair(kb, requests, target)
    typer.echo(
        f"repairs {len(plan.repairs)}, resent {len(plan.resent)}; left out: given up "
        f"{len(plan.given_up)} (max repairs reached), not retried {len(plan.not_retried)} "
        f"(refused or rejected), not collected {len(plan.not_collected)}"
    )
    if plan.state is None:
        typer.echo("nothing to send again")
        return
    typer.echo(f"wrote {len(plan.state.items)} requests to {target}; submit it next")
