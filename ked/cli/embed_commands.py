"""``ked embed`` and ``ked export``: label texts to cached vectors, and vectors to files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from encoders.text import EncoderSpec
from ked.cli.common import open_kb, progress, require_label_source
from ked.cli.text_options import text_encoder_options
from knowledge.views import VIEWS

if TYPE_CHECKING:
    from encoders.text import Embedder

DeviceOption = Annotated[str | None, typer.Option(help="cuda, mps, cpu (default: best available)")]
BatchOption = Annotated[int, typer.Option(min=1, help="texts per batch")]
EmbedMissingOption = Annotated[
    bool, typer.Option("--embed/--no-embed", help="embed missing texts first")
]


@text_encoder_options()
def embed(
    ctx: typer.Context,
    text: EncoderSpec,
    labels: Annotated[
        list[str] | None, typer.Argument(help="labels (default: all diagnoses)")
    ] = None,
    vocab: Annotated[str | None, typer.Option(help="embed a vocabulary's labels")] = None,
    view: Annotated[
        list[str] | None, typer.Option(help=f"views ({', '.join(VIEWS)}); default all")
    ] = None,
    device: DeviceOption = None,
    batch_size: BatchOption = 64,
    shard: Annotated[
        str | None, typer.Option(help="I/N: embed shard I of N of the missing texts")
    ] = None,
    shard_out: Annotated[
        Path | None, typer.Option(help="with --shard: write vectors to this .safetensors file")
    ] = None,
    ingest: Annotated[
        list[Path] | None, typer.Option(help="commit shard .safetensors files")
    ] = None,
) -> None:
    """Embed label texts into the cache; only missing texts are embedded."""
    from encoders.text import Embedder, label_entries, view_texts
    from encoders.text.shards import ingest_shard

    views = view or list(VIEWS)
    read_only = shard is not None
    with open_kb(ctx, read_only=read_only) as kb:
        embedder = Embedder(kb, text, device=device, batch_size=batch_size)
        if ingest:
            for path in ingest:
                typer.echo(f"{path}: {ingest_shard(embedder, path)} vectors committed")
            return
        if labels or vocab:
            entries = label_entries(kb, vocab=vocab, labels=labels or [])
        else:
            entries = label_entries(kb, labels=[s.diagnosis.name for s in kb.all_usable()])
        texts = [t for ts in view_texts(kb, entries, views).values() for t in ts]
        if shard is not None:
            typer.echo(_embed_shard(embedder, texts, shard, shard_out))
            return
        bar = progress(0, "embed", unit="text")

        def advance(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(done)

        try:
            _, summary = embedder.embed(texts, progress=advance)
        finally:
            bar.close()
    typer.echo(
        f"{summary.texts} texts ({summary.unique} distinct) for {len(entries)} labels x "
        f"{len(views)} views: {summary.cache_hits} cache hits, {summary.embedded} embedded "
        f"({summary.corrupt} corrupt re-embedded), {summary.texts_per_s:.1f} texts/s, "
        f"{summary.wall_s:.2f} s; model loaded: {'yes' if summary.model_loaded else 'no'}; "
        f"encoder {embedder.fingerprint[:12]}"
    )


def _embed_shard(embedder: Embedder, texts: list[str], shard: str, out: Path | None) -> str:
    from encoders.text.shards import SUFFIX, embed_shard, write_shard

    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise typer.BadParameter("--shard takes I/N, e.g. 0/4") from None
    if not 0 <= index < count or out is None or out.suffix != SUFFIX:
        raise typer.BadParameter(f"--shard I/N needs 0 <= I < N and --shard-out FILE{SUFFIX}")
    written = embed_shard(embedder, texts, index, count)
    write_shard(out, written)
    return f"shard {index}/{count}: {len(written.texts)} texts embedded to {out}"


@text_encoder_options()
def export(
    ctx: typer.Context,
    text: EncoderSpec,
    out: Annotated[Path, typer.Option(help="output file: .npy, .safetensors, .pt or .parquet")],
    vocab: Annotated[str | None, typer.Option(help="a vocabulary's labels, in its order")] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--labels", help="labels, in this order")
    ] = None,
    view: Annotated[list[str] | None, typer.Option(help="view(s); several are averaged")] = None,
    device: DeviceOption = None,
    batch_size: BatchOption = 64,
    embed_missing: EmbedMissingOption = True,
) -> None:
    """Export the label-vector matrix with a JSON sidecar (labels, codes, encoder, view)."""
    from encoders.text import Embedder, label_entries, label_matrix
    from encoders.text.export import write_label_matrix

    require_label_source(vocab, labels)
    with open_kb(ctx, read_only=not embed_missing) as kb:
        embedder = Embedder(kb, text, device=device, batch_size=batch_size)
        entries = label_entries(kb, vocab=vocab, labels=labels or [])
        matrix = label_matrix(embedder, entries, view or ["full"], embed_missing=embed_missing)
    sidecar = write_label_matrix(matrix, out)
    embedded = sum(s.embedded for s in matrix.summaries)
    typer.echo(
        f"wrote {matrix.vectors.shape[0]} x {matrix.dim} label matrix to {out} "
        f"(sidecar {sidecar}; {embedded} texts embedded first)"
    )
