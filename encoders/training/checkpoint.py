"""Self-describing checkpoints: safetensors weights plus a JSON config.

``<name>.safetensors`` holds the model's state and the label vectors it was trained with;
``<name>.json`` holds the architecture, preprocessing, label set, views, text-encoder
fingerprint and training settings, so a checkpoint can be used without the code that made it.
``last.pt`` adds the optimizer and scheduler state for ``--resume``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from encoders.ecg import Preprocessing
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text.labels import LabelEntry

FORMAT = "ked-checkpoint/1"


class CheckpointError(ValueError):
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
        """The text encoder's description; ``["fingerprint"]`` identifies its vectors."""
        return dict(self.config["text_encoder"])

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
    config = json.loads(path.with_suffix(".json").read_text())
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format {config.get('format')})")
    tensors = load_file(str(path), device=str(device))
    model = KedModel(ModelConfig.from_dict(config["model"]))
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the config ({exc})") from None
    model.to(device).eval()
    return Checkpoint(
        model=model,
        label_vectors=tensors["label_vectors"],
        entries=[LabelEntry(**e) for e in config["labels"]],
        preprocessing=Preprocessing.from_dict(config["preprocessing"]),
        config=config,
        path=path,
    )
