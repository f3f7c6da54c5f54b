"""Self-describing checkpoints: safetensors weights plus a JSON config.

``<name>.safetensors`` holds the model's state and the label vectors it was trained with;
``<name>.json`` holds the architecture, preprocessing, label set, views, text-encoder
fingerprint and training settings, so a checkpoint can be used without the code that made it.
``last.pt`` adds the optimizer and scheduler state for ``--resume``. A file that cannot be
read raises `CheckpointError` naming it and what is wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from encoders.ecg import Preprocessing
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text.labels import LabelEntry
from ked.errors import UserError, one_line

FORMAT = "ked-checkpoint/1"


class CheckpointError(UserError, ValueError):
    """A file that is not a ked checkpoint, or one that does not fit its config."""


@dataclass
class Checkpoint:
    model: KedModel
    label_vectors: torch.Tensor
    entries: list[LabelEntry]
    preprocessing: Preprocessing
    config: dict[str, Any]
    path: Path

    @property
    def views(self) -> list[str]:
        return list(self.config["views"])

    @property
    def text_encoder(self) -> dict[str, Any]:
        """The text encoder's description; ``["fingerprint"]`` identifies its vectors.

        A model recorded as ``./NAME`` is a folder beside the checkpoint file (a converted
        reference checkpoint's text tower), so the run folder can be moved or copied whole.
        """
        info = dict(self.config["text_encoder"])
        model = str(info.get("model", ""))
        if model.startswith("./"):
            info["model"] = str(self.path.parent / model[2:])
        return info

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)


def save_checkpoint(
    path: Path,
    model: KedModel,
    label_vectors: torch.Tensor,
    entries: list[LabelEntry],
    preprocessing: Preprocessing,
    extra: dict[str, Any],
) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config; returns the JSON path."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors["label_vectors"] = label_vectors.detach().float().contiguous()
    config = {
        "format": FORMAT,
        "ked_version": version("ked"),
        "model": model.config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "labels": [e.__dict__ for e in entries],
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    config_path = path.with_suffix(".json")
    _atomic(config_path, lambda p: p.write_text(json.dumps(config, indent=2, default=str) + "\n"))
    return config_path


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its ``best.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise CheckpointError(f"no ked checkpoint at {path} (needs .safetensors and .json)")
    return path


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint in eval mode, with its labels and preprocessing."""
    path = resolve_checkpoint(path)
    config_path = path.with_suffix(".json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: unreadable checkpoint config ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{config_path}: not a {FORMAT} checkpoint config (found {found})")
    try:
        tensors = load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(
            f"{path}: damaged or incomplete safetensors file ({one_line(exc)}); copy it again "
            "or re-run the training that wrote it"
        ) from exc
    try:
        model = KedModel(ModelConfig.from_dict(config["model"]))
        entries = [LabelEntry(**e) for e in config["labels"]]
        preprocessing = Preprocessing.from_dict(config["preprocessing"])
        label_vectors = tensors["label_vectors"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete checkpoint ({one_line(exc)})") from exc
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the config ({one_line(exc)})") from exc
    model.to(device).eval()
    return Checkpoint(
        model=model,
        label_vectors=label_vectors,
        entries=entries,
        preprocessing=preprocessing,
        config=config,
        path=path,
    )


def load_training_state(path: Path) -> dict[str, Any]:
    """The resume state in ``last.pt``, read without unpickling anything but tensors and
    plain values."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises EOF, zip, unpickling and runtime errors
        raise CheckpointError(
            f"{path}: not a readable ked training state ({type(exc).__name__}: the file is cut "
            "short, damaged, or holds objects other than tensors and plain values); delete it "
            "to train from scratch"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}, not ked's training state dict"
        )
    return state
