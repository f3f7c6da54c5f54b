"""The text-encoder options shared by every command that embeds label texts.

``@text_encoder_options()`` adds ``--model``, ``--backend``, ``--pooling``, ``--max-length``,
``--normalize/--no-normalize``, ``--dtype`` and ``--long-texts`` to a command
(``--text-model`` etc. with ``prefix="text-"``) and hands the command one
``text: EncoderSpec`` instead.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from encoders.text import DEFAULT_MODEL, EncoderSpec

Command = TypeVar("Command", bound=Callable[..., Any])

_OPTIONS: tuple[tuple[str, Any, Any, str], ...] = (
    ("model", str | None, None,
     f"text encoder: name or path (env KED_TEXT_MODEL; default {DEFAULT_MODEL})"),
    ("backend", str, "sentence-transformers", "sentence-transformers or transformers"),
    ("pooling", str | None, None, "transformers backend: mean, cls or pooler"),
    ("max_length", int | None, None, "maximum tokens per text"),
    ("normalize", bool, True, "L2-normalise vectors"),
    ("dtype", str, "auto", "auto, float32, float16 or bfloat16"),
    ("long_texts", str, "truncate",
     "texts over the token limit: truncate, or chunk (embed in pieces and average)"),
)  # fmt: skip


def encoder_spec(
    model: str | None,
    backend: str,
    pooling: str | None,
    max_length: int | None,
    normalize: bool,
    dtype: str,
    long_texts: str = "truncate",
) -> EncoderSpec:
    """An encoder spec from option values; the model falls back to ``KED_TEXT_MODEL``."""
    if backend not in ("sentence-transformers", "transformers"):
        raise typer.BadParameter(f"unknown backend {backend!r}")
    if pooling not in (None, "mean", "cls", "pooler"):
        raise typer.BadParameter(f"unknown pooling {pooling!r}")
    if long_texts not in ("truncate", "chunk"):
        raise typer.BadParameter(f"--long-texts is truncate or chunk, got {long_texts!r}")
    return EncoderSpec(
        model=model or os.environ.get("KED_TEXT_MODEL") or DEFAULT_MODEL,
        backend=backend,  # type: ignore[arg-type]
        pooling=pooling,  # type: ignore[arg-type]
        normalize=normalize,
        max_length=max_length,
        dtype=dtype,
        long_texts=long_texts,  # type: ignore[arg-type]
    )


def text_encoder_options(prefix: str = "") -> Callable[[Command], Command]:
    """Give a command the text-encoder options; it receives them as ``text: EncoderSpec``."""

    def decorate(command: Command) -> Command:
        names = {name: f"{prefix.replace('-', '_')}{name}" for name, *_ in _OPTIONS}
        added = []
        for name, kind, default, help_text in _OPTIONS:
            flag = f"--{prefix}{name.replace('_', '-')}"
            declarations = [f"{flag}/--{prefix}no-{name}"] if kind is bool else [flag]
            annotation = Annotated[kind, typer.Option(*declarations, help=help_text)]  # type: ignore[valid-type]  # built at run time
            added.append(
                inspect.Parameter(
                    names[name], inspect.Parameter.KEYWORD_ONLY, default=default,
                    annotation=annotation,
                )
            )  # fmt: skip
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "text"]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(names[name]) for name in names}
            return command(*args, text=encoder_spec(**values), **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return wrapper  # type: ignore[return-value]

    return decorate
