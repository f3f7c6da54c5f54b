"""``ked data build``: prepare datasets once into an on-disk signal store for training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ked.cli.common import RescanOption, progress

app = typer.Typer(help="On-disk signal stores: records prepared once, shared by every job.")


@app.command("build")
def build(
    data: Annotated[
        list[str], typer.Option(help="dataset spec (as for 'ked pretrain'); repeat for several")
    ],
    out: Annotated[Path, typer.Option(help="store folder (created, or brought up to date)")],
    workers: Annotated[int, typer.Option(min=0, help="processes preparing records")] = 0,
    rescan: RescanOption = False,
) -> None:
    """Prepare the records into a float16 memory-mapped store; rerun to add new and changed
    records only, or to resume an interrupted build. Train from it with 'ked pretrain --store'."""
    from encoders.datasets import build_signal_store

    bar = progress(0, "preparing", unit="rec")
    try:
        summary = build_signal_store(
            data,
            out,
            workers=workers,
            rescan=rescan,
            on_record=bar.update,
            on_total=lambda total: bar.reset(total=total),
        )
    finally:
        bar.close()
    typer.echo(
        f"{summary.records} records in {out}: {summary.prepared} prepared now "
        f"({summary.records_per_s:.0f} records/s), {summary.reused} unchanged, "
        f"{summary.resumed} from an interrupted build"
    )
