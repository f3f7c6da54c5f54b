"""Convert ECGFM-KED's released checkpoint into a ked checkpoint that every ked command accepts.

:func:`load_reference_checkpoint` puts the reference's weights into ked's xresnet1d101 and
label-query decoder; this module wraps them in a :class:`KedModel` and writes a self-describing
ked checkpoint (safetensors + JSON) that ``ked zeroshot``, ``eval``, ``encode`` and
``finetune`` load like one ked trained:

- model: ``xresnet1d101`` -> the query decoder (``head="decoder"``, its depth read from the
  file); the text side's ``mlp_embed`` becomes a non-residual :class:`LabelAdapter` from the
  text encoder's width to the decoder's 768; the projection is the identity, so ``encode``'s
  projected vectors are the mean-pooled features the reference's contrastive loss used.
- preprocessing: the reference's input, 12 leads in the standard order (I, II, III, aVR, aVL,
  aVF, V1-V6), 10 s at 100 Hz, per-lead z-score (ked's default pipeline).
- text encoder: the one whose vectors the label side takes (the reference: Bio_ClinicalBERT's
  pooler output, 256 tokens, no L2 normalisation). The reference fine-tuned it (embeddings,
  layer 11 and pooler were trainable), so by default the file's own ``bert_model.*`` weights are
  exported, on the named model's architecture and tokenizer, to a folder next to the checkpoint
  (``best.text_encoder/``); ``text_weights="base"`` uses the named model as published. Its
  width must match ``mlp_embed``'s input, and its fingerprint is recorded, so zero-shot refuses
  label vectors of any other encoder.
- label set: none (scores any labels, zero-shot); views default to the bare name, the label
  texts the reference trained with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from encoders.ecg import Preprocessing
from encoders.models.checkpoint import save_checkpoint
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.models.reference_checkpoint import (
    ReferenceCheckpointError,
    ReferenceLoadReport,
    ReferenceModel,
    _preview,
    load_reference_checkpoint,
)
from encoders.text.device import select_dtype
from encoders.text.spec import EncoderSpec
from ked.errors import one_line
from knowledge.views import check_view

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

TextWeights = Literal["checkpoint", "base"]

REFERENCE_TEXT_MODEL = "emilyalsentzer/Bio_ClinicalBERT"
REFERENCE_PREPROCESSING = Preprocessing()
"""100 Hz, 10 s windows, standard lead order, per-lead z-score: the reference's input."""
REFERENCE_VIEWS: tuple[str, ...] = ("name",)
"""The reference pretrained against the bare label names."""

_ADAPTER_WEIGHT = re.compile(r"^mlp\.(\d+)\.weight$")
_UNUSED_TOWER_KEYS = {"embeddings.position_ids"}  # a buffer newer transformers do not save


class ReferenceConversionError(ReferenceCheckpointError):
    """A reference checkpoint that cannot become a ked checkpoint with these settings."""


@dataclass(frozen=True)
class ReferenceConversion:
    """What :func:`convert_reference` wrote: the checkpoint, the loader's report, the text side."""

    path: Path
    report: ReferenceLoadReport
    text_encoder: dict[str, Any]
    text_dim: int
    decoder_layers: int


def reference_text_encoder(
    model: str | None = None,
    *,
    backend: str | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    normalize: bool | None = None,
) -> EncoderSpec:
    """The reference's text-encoder settings, each overridable (``None`` keeps the reference's).

    The reference: Bio_ClinicalBERT through ``transformers``, ``pooler`` output, 256 tokens, no
    L2 normalisation, float32. With ``backend="sentence-transformers"`` pooling and length are
    the model's own.
    """
    backend = backend or "transformers"
    transformers = backend == "transformers"
    return EncoderSpec(
        model=model or REFERENCE_TEXT_MODEL,
        backend=backend,  # type: ignore[arg-type]
        pooling=(pooling or "pooler") if transformers else pooling,  # type: ignore[arg-type]
        normalize=bool(normalize),
        max_length=max_length or (256 if transformers else None),
        dtype="float32",
    )


def convert_reference(
    src: str | Path,
    out: str | Path,
    *,
    text_encoder: EncoderSpec | None = None,
    text_weights: TextWeights = "checkpoint",
    views: Sequence[str] = REFERENCE_VIEWS,
    strict: bool = True,
    overwrite: bool = False,
) -> ReferenceConversion:
    """Write ECGFM-KED's checkpoint ``src`` as a ked checkpoint at ``out``.

    ``out`` is a run folder (``best.safetensors`` + ``best.json`` in it) or a ``.safetensors``
    path. ``text_encoder`` (default :func:`reference_text_encoder`) must give vectors of the
    width the checkpoint's label side takes; with ``text_weights="checkpoint"`` its architecture
    and tokenizer carry the file's fine-tuned ``bert_model.*`` weights (written to
    ``<stem>.text_encoder/`` beside the checkpoint, which records that folder). ``strict`` is
    the loader's: without it, ked keys the file leaves unfilled keep their initial values and
    are recorded in the checkpoint's ``reference`` entry. Raises
    :class:`ReferenceCheckpointError` (not the reference's layout, unreadable with
    ``weights_only``, keys missing or left over under ``strict``, shapes that do not fit),
    :class:`ReferenceConversionError` (a text encoder of another width or architecture, an
    existing checkpoint at ``out`` without ``overwrite``) or ``ModelNotFoundError``.
    """
    src = Path(src)
    if text_weights not in ("checkpoint", "base"):
        raise ValueError(f"text_weights is 'checkpoint' or 'base', got {text_weights!r}")
    destination = _destination(Path(out), overwrite)
    try:
        for view in views:
            check_view(view)
    except ValueError as exc:
        raise ReferenceConversionError(str(exc)) from exc
    spec = _local(text_encoder or reference_text_encoder())
    spec.model_path()  # a text encoder that cannot be found fails before the file is read
    loaded = load_reference_checkpoint(src, strict=strict)
    config = _model_config(loaded, src)
    tower = _text_tower(loaded, spec, text_weights, config.text_dim, src)
    if tower is None:
        _check_width(_text_dim(spec), config.text_dim, spec, src)
    model = _fill(KedModel(config), loaded, src)
    if tower is not None:
        folder = destination.with_name(f"{destination.stem}.text_encoder")
        spec = replace(spec, model=str(_save_text_tower(tower, spec, folder)))
    text_info = _describe_text_encoder(spec)
    if tower is not None:  # recorded relative to the checkpoint: the run folder can move
        text_info["model"] = f"./{folder.name}"
    report = loaded.report
    extra = {
        "kind": "reference",
        "views": list(views),
        "text_encoder": text_info,
        "held_out": [],
        "reference": {
            "source": str(src.resolve()),
            "epoch": report.epoch,
            "config": report.config,
            "strict": strict,
            "missing_keys": report.missing_keys,
            "unexpected_keys": report.unexpected_keys,
            "skipped": report.skipped,
        },
    }
    if report.missing_keys:
        logger.warning(
            "%d ked keys not in %s keep their initial values (listed in the checkpoint's "
            "'reference' entry)",
            len(report.missing_keys),
            src,
        )
    empty = torch.zeros(0, config.text_dim)
    save_checkpoint(destination, model, empty, [], REFERENCE_PREPROCESSING, extra)
    logger.info("converted %s -> %s", src, destination)
    layers = len(loaded.decoder.decoder.layers)
    return ReferenceConversion(destination, report, text_info, config.text_dim, layers)


def _destination(out: Path, overwrite: bool) -> Path:
    """The ``.safetensors`` path for ``out``; refuses a finished checkpoint unless ``overwrite``.

    The JSON is written last, so a ``.safetensors`` without it (an interrupted conversion) is
    replaced.
    """
    path = out if out.suffix == ".safetensors" else out / "best.safetensors"
    if path.with_suffix(".json").exists() and not overwrite:
        raise ReferenceConversionError(
            f"{path.with_suffix('.json')} already exists; pass --force (overwrite=True) to "
            "replace it"
        )
    return path


def _local(spec: EncoderSpec) -> EncoderSpec:
    """The spec with a concrete dtype and, for a local folder, its absolute path."""
    local = Path(spec.model).expanduser()
    model = str(local.resolve()) if local.is_dir() else spec.model
    return replace(spec, model=model, dtype=select_dtype(spec.dtype, "cpu"))


def _describe_text_encoder(spec: EncoderSpec) -> dict[str, Any]:
    """The checkpoint's ``text_encoder`` entry (settings, file digests, fingerprint), as
    training records it."""
    fingerprint, description = spec.fingerprint(_file_sha256)
    return {**description, "fingerprint": fingerprint}


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_width(dim: int, expected: int, spec: EncoderSpec, src: Path) -> None:
    """Raise unless the text encoder's vectors are as wide as the label side takes."""
    if dim != expected:
        raise ReferenceConversionError(
            f"{src}: its label side takes {expected}-d text vectors, but text encoder "
            f"{spec.model!r} gives {dim}-d ones; convert with the text encoder the checkpoint was "
            f"trained with (the reference's: {REFERENCE_TEXT_MODEL}, transformers backend, "
            "pooler output)"
        )


def _text_tower(
    loaded: ReferenceModel, spec: EncoderSpec, weights: TextWeights, width: int, src: Path
) -> PreTrainedModel | None:
    """The named model's architecture with the file's fine-tuned ``bert_model.*`` weights;
    ``None`` with ``weights="base"`` (the named model as published)."""
    state = loaded.text_tower_state
    if weights == "base":
        if state is not None:
            logger.warning(
                "%s: its fine-tuned text tower (%d bert_model tensors) is left out; label "
                "vectors come from %s as published",
                src,
                len(state),
                spec.model,
            )
        return None
    if state is None:
        raise ReferenceConversionError(
            f"{src}: no text_encoder bert_model.* weights to export; pass --text-weights base "
            f"(text_weights='base') to take label vectors from {spec.model} as published"
        )
    if spec.backend != "transformers":
        raise ReferenceConversionError(
            f"the fine-tuned text tower of {src} runs with the transformers backend, not "
            f"{spec.backend}; or pass --text-weights base to use {spec.model} as published"
        )
    from transformers import AutoConfig, AutoModel

    architecture = AutoConfig.from_pretrained(spec.model_path())
    _check_width(int(architecture.hidden_size), width, spec, src)
    tower = AutoModel.from_config(architecture)
    state = {key: value for key, value in state.items() if key not in _UNUSED_TOWER_KEYS}
    try:
        missing, unexpected = tower.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        missing, unexpected = [one_line(exc)], []
    if missing or unexpected:
        raise ReferenceConversionError(
            f"{src}: text_encoder bert_model.* do not fit {spec.model}'s architecture "
            f"(not filled: {_preview(missing)}; not used: {_preview(unexpected)}); name the "
            "text encoder the checkpoint was trained with"
        )
    return tower.eval()


def _save_text_tower(tower: PreTrainedModel, spec: EncoderSpec, folder: Path) -> Path:
    """Write ``tower`` with the named model's tokenizer to ``folder`` (replaced whole)."""
    from transformers import AutoTokenizer

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tower.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(spec.model_path()).save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder.resolve()


def _text_dim(spec: EncoderSpec) -> int:
    """The width of the vectors ``spec``'s model gives (loads the model on the CPU)."""
    from encoders.text.backends import load_text_encoder

    return load_text_encoder(spec, "cpu").dim


def _model_config(loaded: ReferenceModel, src: Path) -> ModelConfig:
    """The :class:`ModelConfig` holding the loaded modules: ``mlp_embed`` sets the text width."""
    decoder = loaded.decoder
    d_model = decoder.norm.normalized_shape[0]
    decoder_kwargs = {"num_layers": len(decoder.decoder.layers)}
    adapter = loaded.label_adapter_state
    if adapter is None:
        return ModelConfig(text_dim=d_model, head="decoder", decoder_kwargs=decoder_kwargs)
    indices = sorted(int(m.group(1)) for key in adapter if (m := _ADAPTER_WEIGHT.match(key)))
    if not indices or indices != list(range(0, 2 * len(indices), 2)):
        raise ReferenceConversionError(
            f"{src}: text_encoder mlp_embed has Linear layers at {indices}, not at 0, 2, 4, ... "
            "(Linear and GELU alternating)"
        )
    first, last = adapter["mlp.0.weight"], adapter[f"mlp.{indices[-1]}.weight"]
    if last.shape[0] != d_model:
        raise ReferenceConversionError(
            f"{src}: text_encoder mlp_embed gives {last.shape[0]}-d label queries, but the query "
            f"decoder takes {d_model}-d ones"
        )
    adapter_kwargs = {
        "residual": False,
        "num_layers": len(indices),
        "hidden_dim": int(first.shape[0]),
        "out_dim": d_model,
    }
    return ModelConfig(
        text_dim=int(first.shape[1]),
        adapter=True,
        adapter_kwargs=adapter_kwargs,
        head="decoder",
        decoder_kwargs=decoder_kwargs,
    )


def _fill(model: KedModel, loaded: ReferenceModel, src: Path) -> KedModel:
    """``model`` with the loaded weights and an identity projection, in eval mode."""
    state = {f"encoder.{k}": v for k, v in loaded.encoder.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in loaded.decoder.state_dict().items()}
    state |= {f"adapter.{k}": v for k, v in (loaded.label_adapter_state or {}).items()}
    width, label_dim = model.encoder.out_channels, model.config.label_dim
    state["projection.net.0.weight"] = torch.eye(label_dim, width)
    state["projection.net.0.bias"] = torch.zeros(label_dim)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ReferenceConversionError(
            f"{src}: the weights do not fit ked's model ({one_line(exc)})"
        ) from exc
    return model.eval()
