"""Choosing the device and precision for text encoding, and each training process's device.

torch loads only when it must decide: a run whose vectors are all cached, on a machine that
cannot have a GPU, never imports it (about 1.5 s of a 2-core machine's start-up).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DTYPES = ("float32", "float16", "bfloat16")

# Device nodes of NVIDIA (incl. Jetson), WSL 2 and ROCm GPUs: without any, torch finds no GPU.
_GPU_NODES = ("nvidia", "nvhost", "dxg", "kfd")


def select_device(requested: str | None = None) -> str:
    """``requested`` if given, else CUDA, then Apple MPS, then CPU."""
    if requested:
        return requested
    if sys.platform == "linux" and not any(
        node.name.startswith(_GPU_NODES) for node in Path("/dev").iterdir()
    ):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def select_dtype(requested: str, device: str) -> str:
    """``"auto"`` means half precision on a GPU (bf16 where supported), float32 elsewhere."""
    if requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"unknown dtype {requested!r}; choose auto, {', '.join(DTYPES)}")
        return requested
    if device.split(":")[0] == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def process_device(requested: str | None = None) -> str:
    """This process's device: under ``torchrun`` (``LOCAL_RANK`` set) each rank takes its own
    GPU, ``cuda:LOCAL_RANK``, whatever ``requested`` names (``cuda``, ``cuda:0``); a CPU or MPS
    choice stays as it is."""
    device = select_device(requested)
    local = os.environ.get("LOCAL_RANK")
    if local is None or device.split(":")[0] != "cuda":
        return device
    return f"cuda:{int(local)}"
