"""``ked convert-reference``: ECGFM-KED's released weights as a ked checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convert_reference(
    src: Annotated[
        Path, typer.Argument(help="ECGFM-KED checkpoint (torch.save dict: ecg_model, model, ...)")
    ],
    out: Annotated[
        Path, typer.Option(help="run folder (best.safetensors + best.json) or a .safetensors path")
    ],
    text_encoder: Annotated[
        str | None,
        typer.Option(
            help="text encoder the checkpoint's label side was trained with: name or local "
            "folder (default the reference's, emilyalsentzer/Bio_ClinicalBERT)"
        ),
    ] = None,
    text_backend: Annotated[
        str | None,
        typer.Option(help="transformers (default, the reference's) or sentence-transformers"),
    ] = None,
    text_pooling: Annotated[
        str | None, typer.Option(help="transformers backend: pooler (default), cls or mean")
    ] = None,
    text_max_length: Annotated[
        int | None, typer.Option(min=1, help="tokens per text (default 256 with transformers)")
    ] = None,
    text_normalize: Annotated[
        bool, typer.Option(help="L2-normalise text vectors (the reference does not)")
    ] = False,
    text_weights: Annotated[
        str,
        typer.Option(
            help="checkpoint: the text tower as the reference fine-tuned it (the file's "
            "bert_model weights on --text-encoder's architecture and tokenizer, written beside "
            "the checkpoint); base: --text-encoder as published"
        ),
    ] = "checkpoint",
    view: Annotated[
        list[str] | None,
        typer.Option(help="default knowledge views of the checkpoint (default: name)"),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(help="refuse a file with ked keys missing or checkpoint keys left over"),
    ] = True,
    force: Annotated[bool, typer.Option(help="replace an existing checkpoint at --out")] = False,
) -> None:
    """Convert ECGFM-KED's released checkpoint for zeroshot, eval, encode and finetune."""
    from encoders.models.reference_conversion import (
        REFERENCE_VIEWS,
        convert_reference,
        reference_text_encoder,
    )

    if text_backend not in (None, "transformers", "sentence-transformers"):
        raise typer.BadParameter("--text-backend is transformers or sentence-transformers")
    if text_pooling not in (None, "pooler", "cls", "mean"):
        raise typer.BadParameter("--text-pooling is pooler, cls or mean")
    if text_weights not in ("checkpoint", "base"):
        raise typer.BadParameter("--text-weights is checkpoint or base")
    if text_pooling is not None and text_backend == "sentence-transformers":
        raise typer.BadParameter("--text-pooling needs --text-backend transformers")
    spec = reference_text_encoder(
        text_encoder,
        backend=text_backend,
        pooling=text_pooling,
        max_length=text_max_length,
        normalize=text_normalize,
    )
    result = convert_reference(
        src,
        out,
        text_encoder=spec,
        text_weights=text_weights,  # type: ignore[arg-type]
        views=tuple(view or REFERENCE_VIEWS),
        strict=strict,
        overwrite=force,
    )
    report = result.report
    typer.echo(
        f"converted {src} (epoch {report.epoch}): xresnet1d101 + {result.decoder_layers}-layer "
        f"query decoder, label vectors from {result.text_encoder['model']} "
        f"({result.text_dim}-d, fingerprint {result.text_encoder['fingerprint'][:12]})"
    )
    typer.echo(f"skipped: {', '.join(report.skipped) or 'nothing'}")
    if report.missing_keys or report.unexpected_keys:
        typer.echo(
            f"not strict: {len(report.missing_keys)} ked keys kept their initial values, "
            f"{len(report.unexpected_keys)} checkpoint keys unused (listed in the JSON)",
            err=True,
        )
    typer.echo(f"checkpoint {result.path}")
