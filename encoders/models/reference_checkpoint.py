"""Load ECGFM-KED's released checkpoint into ked's ``xresnet1d101`` and label-query decoder.

The released file is a ``torch.save`` dict with keys ``ecg_model``, ``model`` (the query decoder),
``text_encoder``, ``optimizer``, ``lr_scheduler``, ``config`` and ``epoch``. The mapping:

============================================  ================================================
reference key                                 ked key
============================================  ================================================
``ecg_model``: ``N.0.*`` / ``N.1.*``, N=0-2    ``stem.N.conv.*`` / ``stem.N.bn.*``
``S.B.convs.K.0.*`` / ``S.B.convs.K.1.*``      ``stages.(S-4).B.convs.K.conv.*`` / ``.bn.*``
``S.B.convpath.0.K.J.*``                      alias of ``S.B.convs.K.J.*``: checked equal, dropped
``S.B.idpath.{0|1}.0.*`` / ``.1.*``           ``stages.(S-4).B.proj.conv.*`` / ``.bn.*``
``model``: ``decoder.layers.L.*``             ``decoder.layers.L.*`` (same names)
``decoder_norm.*``                            ``norm.*``
``decoder.norm.*``                            duplicate of ``decoder_norm.*``: checked, dropped
``mlp_head.{0,2}.*``                          ``head.{0,2}.*``
``logit_scale``                               unused by the reference's forward: reported
``text_encoder``: ``mlp_embed.{0,2,4}.*``     returned for ``LabelAdapter(768, residual=False)``
``text_encoder``: ``bert_model.*``             returned (prefix removed) as the fine-tuned text
                                              tower, for :mod:`.reference_conversion`
rest of ``text_encoder``, ``optimizer``,       ignored (reported)
``lr_scheduler``
============================================  ================================================

The file is read with ``torch.load(weights_only=True)``; anything that does not fit this layout
raises :class:`ReferenceCheckpointError` naming the file and the reason. The decoder's depth is
read from the ``decoder.layers.L`` keys; its head count (4) cannot be read from tensor shapes and
is the reference's.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.models.query_decoder import LabelQueryDecoder
from encoders.models.registry import create_ecg_encoder
from ked.errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("ecg_model", "model", "text_encoder", "optimizer", "lr_scheduler", "config")
REFERENCE_ENCODER_NAME = "xresnet1d_101"

_STEM = re.compile(r"^([0-2])\.([01])\.(.+)$")
_CONVS = re.compile(r"^([4-7])\.(\d+)\.convs\.(\d+)\.([01])\.(.+)$")
_CONVPATH_ALIAS = re.compile(r"^([4-7])\.(\d+)\.convpath\.0\.(\d+)\.([01])\.(.+)$")
_IDPATH = re.compile(r"^([4-7])\.(\d+)\.idpath\.[01]\.([01])\.(.+)$")
_DECODER_LAYER = re.compile(r"^decoder\.layers\.(\d+)\..+$")
_DECODER_NORM = re.compile(r"^decoder_norm\.(.+)$")
_DECODER_NORM_ALIAS = re.compile(r"^decoder\.norm\.(.+)$")
_MLP_HEAD = re.compile(r"^mlp_head\.(\d+)\.(.+)$")
_MLP_EMBED = re.compile(r"^mlp_embed\.(\d+)\.(.+)$")
_CONV_OR_BN = {"0": "conv", "1": "bn"}


class ReferenceCheckpointError(UserError, ValueError):
    """The file is not ECGFM-KED's checkpoint layout, or its tensors do not fit ked's modules."""


@dataclass(frozen=True)
class ReferenceLoadReport:
    """What the loader did: keys left unfilled or unused, groups skipped, the run's metadata.

    ``missing_keys`` (ked keys not filled, prefixed ``encoder.``/``decoder.``) and
    ``unexpected_keys`` (checkpoint keys not used, prefixed ``ecg_model.``/``model.``) are empty
    after a strict load. ``skipped`` maps each deliberately ignored group to the reason.
    """

    path: Path
    epoch: int | None
    config: dict[str, Any]
    missing_keys: list[str]
    unexpected_keys: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class ReferenceModel:
    """ked modules holding the reference weights (in eval mode) and the load report.

    ``label_adapter_state`` is the text side's ``mlp_embed`` in the layout of
    ``LabelAdapter(768, residual=False)``, or ``None`` when the file has no ``mlp_embed``;
    ``text_tower_state`` its ``bert_model.*`` tensors without the prefix (the text encoder as
    the reference fine-tuned it), or ``None`` when there are none.
    """

    encoder: nn.Module
    decoder: LabelQueryDecoder
    label_adapter_state: dict[str, torch.Tensor] | None
    report: ReferenceLoadReport
    text_tower_state: dict[str, torch.Tensor] | None = None


@dataclass
class _Mapped:
    """Tensors renamed to ked keys (with their source key), unused keys and notes on skips."""

    tensors: dict[str, tuple[str, torch.Tensor]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def load_reference_checkpoint(path: str | Path, *, strict: bool = True) -> ReferenceModel:
    """Read ECGFM-KED's released checkpoint at ``path`` into ked's encoder and query decoder.

    With ``strict`` (default) any ked key left unfilled or checkpoint key left unused raises
    :class:`ReferenceCheckpointError`; without it they are listed in the report. A file of the
    wrong layout, of another ECG model, or with tensors whose shapes do not fit always raises.
    """
    path = Path(path)
    checkpoint = _read(path)
    config = checkpoint.get("config") or {}
    if not isinstance(config, dict):
        raise ReferenceCheckpointError(f"{path}: 'config' is a {type(config).__name__}, not a dict")
    encoder_name = config.get("ecg_model_name", REFERENCE_ENCODER_NAME)
    if encoder_name != REFERENCE_ENCODER_NAME:
        raise ReferenceCheckpointError(
            f"{path}: checkpoint of ECG model {encoder_name!r} (config 'ecg_model_name'); "
            f"only {REFERENCE_ENCODER_NAME!r} is supported"
        )

    encoder_state = _tensor_dict(checkpoint, "ecg_model", path)
    decoder_state = _tensor_dict(checkpoint, "model", path)
    encoder_map = _map_encoder(encoder_state, path)
    decoder_map = _map_decoder(decoder_state, path)

    encoder = create_ecg_encoder("xresnet1d101")
    decoder = LabelQueryDecoder(num_layers=_decoder_depth(decoder_state, path))
    missing, unexpected = _load(encoder, encoder_map, "encoder", "ecg_model", path)
    decoder_missing, decoder_unexpected = _load(decoder, decoder_map, "decoder", "model", path)
    missing += decoder_missing
    unexpected += decoder_unexpected
    if strict and (missing or unexpected):
        raise ReferenceCheckpointError(
            f"{path}: strict load failed; ked keys not filled: {_preview(missing)}; "
            f"checkpoint keys not used: {_preview(unexpected)}"
        )

    skipped = {**encoder_map.skipped, **decoder_map.skipped}
    text_state = checkpoint.get("text_encoder")
    label_adapter_state = text_tower_state = None
    if isinstance(text_state, dict):
        label_adapter_state = _label_adapter_state(text_state)
        text_tower_state = _text_tower_state(text_state)
        note = "ked scores with cached label vectors instead of the text tower"
        if label_adapter_state is not None:
            note += "; mlp_embed returned as label_adapter_state"
        if text_tower_state is not None:
            note += "; bert_model returned as text_tower_state"
        skipped["text_encoder"] = (
            f"{len(text_state)} entries (BERT, mlp_embed, logit_scale): {note}"
        )
    for key in ("optimizer", "lr_scheduler"):
        if key in checkpoint:
            skipped[key] = "training state, not needed to run or fine-tune the weights"

    epoch = checkpoint.get("epoch")
    report = ReferenceLoadReport(
        path=path,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        config=config,
        missing_keys=missing,
        unexpected_keys=unexpected,
        skipped=skipped,
    )
    logger.info(
        "loaded %s (epoch %s): %d missing, %d unexpected keys; skipped %s",
        path,
        report.epoch,
        len(missing),
        len(unexpected),
        ", ".join(skipped),
    )
    return ReferenceModel(
        encoder.eval(), decoder.eval(), label_adapter_state, report, text_tower_state
    )


def _read(path: Path) -> dict[str, Any]:
    """``torch.load`` the file safely and check its top-level layout."""
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        raise ReferenceCheckpointError(
            f"{path}: a safetensors file, not ECGFM-KED's torch.save checkpoint (.pt, .pth); "
            "a ked checkpoint needs no conversion"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ReferenceCheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({type(err).__name__}: "
            "the file is cut short, damaged, or holds objects other than tensors and plain values)"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ReferenceCheckpointError(
            f"{path}: holds a {type(checkpoint).__name__}, not ECGFM-KED's checkpoint dict"
        )
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise ReferenceCheckpointError(
            f"{path}: looks like a plain state_dict ({len(checkpoint)} tensors, e.g. "
            f"{next(iter(checkpoint))!r}), not ECGFM-KED's checkpoint with keys "
            f"{', '.join(CHECKPOINT_KEYS)}"
        )
    absent = [key for key in ("ecg_model", "model") if key not in checkpoint]
    if absent:
        raise ReferenceCheckpointError(
            f"{path}: no {' or '.join(map(repr, absent))} entry (found "
            f"{', '.join(map(repr, checkpoint)) or 'nothing'}); "
            f"expected {', '.join(CHECKPOINT_KEYS)}"
        )
    return checkpoint


def _tensor_dict(checkpoint: dict[str, Any], key: str, path: Path) -> dict[str, torch.Tensor]:
    """The state dict under ``key``; raises unless it maps names to tensors."""
    state = checkpoint[key]
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ReferenceCheckpointError(f"{path}: {key!r} is not a state dict of tensors")
    return state


def _map_encoder(state: dict[str, torch.Tensor], path: Path) -> _Mapped:
    """Rename the reference's numeric xresnet1d101 keys; check and drop the convpath aliases."""
    mapped = _Mapped()
    aliases = 0
    for key, tensor in state.items():
        if match := _STEM.match(key):
            index, part, rest = match.groups()
            mapped.tensors[f"stem.{index}.{_CONV_OR_BN[part]}.{rest}"] = (key, tensor)
        elif match := _CONVS.match(key):
            stage, block, layer, part, rest = match.groups()
            target = f"stages.{int(stage) - 4}.{block}.convs.{layer}.{_CONV_OR_BN[part]}.{rest}"
            mapped.tensors[target] = (key, tensor)
        elif match := _CONVPATH_ALIAS.match(key):
            stage, block, layer, part, rest = match.groups()
            _check_alias(
                state, key, f"{stage}.{block}.convs.{layer}.{part}.{rest}", "ecg_model", path
            )
            aliases += 1
        elif match := _IDPATH.match(key):
            stage, block, part, rest = match.groups()
            target = f"stages.{int(stage) - 4}.{block}.proj.{_CONV_OR_BN[part]}.{rest}"
            mapped.tensors[target] = (key, tensor)
        else:
            mapped.unexpected.append(key)
    if not mapped.tensors:
        raise ReferenceCheckpointError(
            f"{path}: 'ecg_model' has no xresnet1d keys ('0.0.weight', '4.0.convs.0.0.weight', "
            f"...); found e.g. {_preview(list(state))}: a checkpoint of another ECG model?"
        )
    if aliases:
        mapped.skipped["ecg_model convpath.0.*"] = (
            f"{aliases} tensors aliasing convs.* (checked identical)"
        )
    return mapped


def _map_decoder(state: dict[str, torch.Tensor], path: Path) -> _Mapped:
    """Rename the reference TQN's keys; check and drop the ``decoder.norm`` duplicate."""
    mapped = _Mapped()
    for key, tensor in state.items():
        if _DECODER_LAYER.match(key):
            mapped.tensors[key] = (key, tensor)
        elif match := _DECODER_NORM.match(key):
            mapped.tensors[f"norm.{match.group(1)}"] = (key, tensor)
        elif match := _DECODER_NORM_ALIAS.match(key):
            _check_alias(state, key, f"decoder_norm.{match.group(1)}", "model", path)
            mapped.skipped["model decoder.norm.*"] = "duplicate of decoder_norm.* (checked)"
        elif match := _MLP_HEAD.match(key):
            mapped.tensors[f"head.{match.group(1)}.{match.group(2)}"] = (key, tensor)
        elif key == "logit_scale" and tensor.numel() == 1:
            mapped.skipped["model logit_scale"] = (
                f"{tensor.item():.4f}; not used by the reference decoder's forward"
            )
        else:
            mapped.unexpected.append(key)
    return mapped


def _check_alias(
    state: dict[str, torch.Tensor], alias: str, original: str, group: str, path: Path
) -> None:
    """Raise unless ``alias`` duplicates ``original`` exactly."""
    if original not in state:
        raise ReferenceCheckpointError(
            f"{path}: {group} key {alias!r} aliases {original!r}, which is absent"
        )
    if not torch.equal(state[alias], state[original]):
        raise ReferenceCheckpointError(
            f"{path}: {group} key {alias!r} differs from {original!r}, which it should duplicate"
        )


def _decoder_depth(state: dict[str, torch.Tensor], path: Path) -> int:
    """Number of decoder layers, from the ``decoder.layers.L.*`` keys."""
    layers = {int(match.group(1)) for key in state if (match := _DECODER_LAYER.match(key))}
    if not layers:
        raise ReferenceCheckpointError(
            f"{path}: 'model' has no 'decoder.layers.*' keys (found e.g. {_preview(list(state))}):"
            " not ECGFM-KED's query decoder"
        )
    return max(layers) + 1


def _load(
    module: nn.Module, mapped: _Mapped, name: str, group: str, path: Path
) -> tuple[list[str], list[str]]:
    """Copy the mapped tensors into ``module``.

    Returns the module's keys left unfilled (prefixed ``name.``) and the checkpoint keys left
    unused (prefixed ``group.``).
    """
    target = module.state_dict()
    mismatches = [
        f"{source} {tuple(tensor.shape)} -> {key} {tuple(target[key].shape)}"
        for key, (source, tensor) in mapped.tensors.items()
        if key in target and tensor.shape != target[key].shape
    ]
    if mismatches:
        raise ReferenceCheckpointError(
            f"{path}: {len(mismatches)} {group} tensors do not fit ked's {name}: "
            f"{_preview(mismatches)}"
        )
    unused = mapped.unexpected + [
        source for key, (source, _) in mapped.tensors.items() if key not in target
    ]
    fitting = {key: tensor for key, (_, tensor) in mapped.tensors.items() if key in target}
    module.load_state_dict(fitting, strict=False)
    missing = [f"{name}.{key}" for key in target if key not in fitting]
    return missing, [f"{group}.{key}" for key in unused]


def _label_adapter_state(text_state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """``mlp_embed.{i}.*`` renamed to ``mlp.{i}.*``, or ``None`` when the text side has none."""
    state = {
        f"mlp.{match.group(1)}.{match.group(2)}": value
        for key, value in text_state.items()
        if (match := _MLP_EMBED.match(key)) and isinstance(value, torch.Tensor)
    }
    return state or None


def _text_tower_state(text_state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """``bert_model.*`` tensors without the prefix, or ``None`` when the text side has none."""
    state = {
        key.removeprefix("bert_model."): value
        for key, value in text_state.items()
        if key.startswith("bert_model.") and isinstance(value, torch.Tensor)
    }
    return state or None


def _preview(items: list[str], limit: int = 5) -> str:
    """The first ``limit`` items joined, with a count of the rest."""
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
