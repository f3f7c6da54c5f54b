"""The ``ked`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ked.cli import (
    convert_command,
    data_commands,
    demo_command,
    embed_commands,
    inference_commands,
    kb_commands,
    knowledge_commands,
    labels_commands,
    report_command,
    train_commands,
    vocab_commands,
)
from ked.cli.common import CliState

app = typer.Typer(
    help="ked: knowledge-enhanced ECG diagnosis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Typer shows command panels before sub-app panels, so the knowledge groups come last.
KNOWLEDGE, VECTORS, TRAINING, DIAGNOSIS = "Knowledge", "Label vectors", "Training", "Diagnosis"
app.command("demo", rich_help_panel="Start here")(demo_command.demo)
app.add_typer(knowledge_commands.app, name="knowledge", rich_help_panel=KNOWLEDGE)
app.add_typer(kb_commands.app, name="kb", rich_help_panel=KNOWLEDGE)
app.add_typer(vocab_commands.app, name="vocab", rich_help_panel=KNOWLEDGE)
app.command("embed", rich_help_panel=VECTORS)(embed_commands.embed)
app.command("export", rich_help_panel=VECTORS)(embed_commands.export)
app.add_typer(labels_commands.app, name="labels", rich_help_panel=VECTORS)
app.command("pretrain", rich_help_panel=TRAINING)(train_commands.pretrain_command)
app.command("finetune", rich_help_panel=TRAINING)(train_commands.finetune_command)
app.add_typer(data_commands.app, name="data", rich_help_panel=TRAINING)
app.command("convert-reference", rich_help_panel=TRAINING)(convert_command.convert_reference)
app.command("zeroshot", rich_help_panel=DIAGNOSIS)(inference_commands.zeroshot)
app.command("encode", rich_help_panel=DIAGNOSIS)(inference_commands.encode)
app.command("eval", rich_help_panel=DIAGNOSIS)(inference_commands.eval_command)
app.command("explain", rich_help_panel=DIAGNOSIS)(inference_commands.explain_command)
app.command("report", rich_help_panel=DIAGNOSIS)(report_command.report)

# Errors that are the user's to fix: shown as one line, exit code 2, the traceback only with
# -v. Named by module, so that start-up imports none of them: an error can only come from a
# loaded module. ked's own are `ked.errors.UserError`s.
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("ked.errors", "UserError"),
    ("builtins", "KeyError"),
    ("builtins", "FileNotFoundError"),
)


def user_error_types() -> tuple[type[Exception], ...]:
    """The classes of :data:`USER_ERRORS` whose modules are loaded."""
    return tuple(
        getattr(sys.modules[module], name) for module, name in USER_ERRORS if module in sys.modules
    )


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        Path | None, typer.Option(help="knowledge base file (env KED_DB; default ./ked.duckdb)")
    ] = None,
    use_knowledge: Annotated[
        str | None,
        typer.Option(
            help="knowledge statuses that feed embeddings, training and zero-shot, e.g. "
            "accepted,proposed (env KED_USE_KNOWLEDGE; default accepted)"
        ),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="more logs")] = 0,
) -> None:
    """Global options."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = CliState(db=db, use_knowledge=use_knowledge)


def main() -> None:
    """Entry point of the ``ked`` console script."""
    try:
        app()
    except Exception as exc:
        if not isinstance(exc, user_error_types()):
            raise
        logging.getLogger(__name__).info("the error's traceback:", exc_info=exc)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(2) from None
