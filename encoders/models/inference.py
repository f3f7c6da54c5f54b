"""Fast eval-mode inference: batch norm folded into the convs, no autograd, optional compile.

:func:`prepare_for_inference` returns a copy of an encoder (or a whole :class:`KedModel`) for
scoring only: eval mode, every ``ConvBN1d``'s BatchNorm folded into its conv (the same function
up to float rounding, one op fewer per layer), parameters frozen so that autograd records nothing
even outside ``torch.inference_mode()``, and optionally ``torch.compile``. Run it under
``torch.inference_mode()``; on CPU, ``torch.set_num_threads`` set to the number of physical cores
is usually best. ``bench/ecg_inference.py`` measures each setting against a plain forward.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from encoders.models.xresnet1d import ConvBN1d


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each ``ConvBN1d``'s BatchNorm into its conv, in place; returns how many were folded.

    The folded conv gets a bias and the BatchNorm becomes an identity. Raises ``ValueError`` when
    ``model`` is in training mode: folding uses the running statistics, which training updates.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode; call model.eval() first")
    folded = 0
    for module in model.modules():
        if isinstance(module, ConvBN1d) and isinstance(module.bn, nn.BatchNorm1d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.register_module("bn", nn.Identity())
            folded += 1
    return folded


def prepare_for_inference(model: nn.Module, *, compile: bool = False) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded, parameters frozen.

    ``model`` itself is left unchanged. With ``compile``, the copy is wrapped in
    ``torch.compile`` (inductor); it compiles on its first call (on CPU this needs a C++
    compiler and takes tens of seconds for xresnet1d101) and again for each new input shape.
    """
    prepared = copy.deepcopy(model).eval()
    fold_batchnorm(prepared)
    prepared.requires_grad_(False)
    if compile:
        return cast(nn.Module, torch.compile(prepared))
    return prepared
