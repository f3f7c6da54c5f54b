"""Shared pieces of the command line: state, opening the knowledge base, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ked.config import Settings

if TYPE_CHECKING:
    from tqdm import tqdm

    from encoders.training.loop import StepInfo
    from kb_store.store import KnowledgeBase


RescanOption = Annotated[
    bool,
    typer.Option(help="read every record of the dataset again, not only new and changed ones"),
]


@dataclass
class CliState:
    db: Path | None = None
    use_knowledge: str | None = None


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings from this command's flags, the global options, the environment and defaults."""
    state: CliState = ctx.obj or CliState()
    knowledge = [state.use_knowledge] if state.use_knowledge else None
    return Settings.resolve(db=state.db, knowledge_statuses=knowledge, **overrides)


def open_kb(ctx: typer.Context, *, read_only: bool = False) -> KnowledgeBase:
    from kb_store.store import KnowledgeBase

    resolved = settings(ctx)
    return KnowledgeBase(resolved.db, read_only=read_only, usable=resolved.knowledge_statuses)


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def progress(total: int, desc: str, unit: str = "it") -> tqdm:
    """A progress bar on stderr (hidden when stderr is not a terminal and total is small)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def require_label_source(vocab: str | None, labels: list[str] | None) -> None:
    """Commands take their labels from exactly one of --vocab and --labels."""
    if (vocab is None) == (not labels):
        raise typer.BadParameter("give exactly one of --vocab and --labels")


@contextmanager
def epoch_progress(desc: str, epochs: int) -> Iterator[Callable[[StepInfo], None]]:
    """A progress bar over each epoch's steps (loss, records/s); yields the step callback."""
    bar = progress(0, desc, unit="step")

    def on_step(info: StepInfo) -> None:
        if info.step == 1:
            bar.reset(total=info.steps)
        bar.set_description(f"epoch {info.epoch + 1}/{epochs}")
        bar.set_postfix(loss=f"{info.loss:.3f}", rec_s=f"{info.records_per_s:.0f}")
        bar.update(1)

    try:
        yield on_step
    finally:
        bar.close()
