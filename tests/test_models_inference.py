"""Inference preparation: folded batch norm and frozen copies give the eval model's outputs."""

from __future__ import annotations

from itertools import islice
from typing import TypeVar

import numpy as np
import pytest
import torch
from torch import nn

from encoders.ecg import Preprocessing, open_source
from encoders.models import create_ecg_encoder
from encoders.models.inference import fold_batchnorm, prepare_for_inference
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.models.xresnet1d import ConvBN1d

M = TypeVar("M", bound=nn.Module)


@pytest.fixture(scope="module")
def ecgs() -> torch.Tensor:
    """Eight real PTB-XL windows (12 x 1000) from the packaged sample."""
    records = islice(open_source("sample").iter_records(), 8)
    return torch.from_numpy(np.stack([Preprocessing().apply(r).x for r in records]))


def _with_batchnorm_statistics(model: M, ecgs: torch.Tensor) -> M:
    """Non-trivial BN scales and shifts, and running statistics estimated on real ECGs.

    A freshly built XResNet's last BN of each block has scale 0 and its running statistics are
    (0, 1), which would hide a wrong fold; these values make every folded conv matter.
    """
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.momentum = None  # cumulative average over the calibration batches
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
    model.train()
    encoder = model.encoder if isinstance(model, KedModel) else model
    with torch.no_grad():
        encoder(ecgs)
    return model.eval()


def test_prepared_encoder_gives_the_eval_outputs_without_autograd(ecgs: torch.Tensor) -> None:
    model = _with_batchnorm_statistics(create_ecg_encoder("xresnet1d101"), ecgs)
    n_convbn = sum(isinstance(m, ConvBN1d) for m in model.modules())

    prepared = prepare_for_inference(model)
    expected = model(ecgs).detach()
    actual = prepared(ecgs)

    assert not actual.requires_grad  # frozen: no graph even outside inference_mode
    assert expected.abs().max() > 1.0  # the check below compares non-trivial features
    # Folding reorders float32 arithmetic over ~100 layers: ~1e-4 of the output scale apart.
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in prepared.modules())
    assert all(m.conv.bias is not None for m in prepared.modules() if isinstance(m, ConvBN1d))
    # The original is untouched: still BatchNorm, still trainable.
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == n_convbn
    assert all(p.requires_grad for p in model.parameters())


def test_prepared_ked_model_gives_the_same_logits(ecgs: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = KedModel(ModelConfig(encoder="xresnet1d_small", text_dim=32, head="decoder"))
    model = _with_batchnorm_statistics(model, ecgs)
    labels = torch.randn(5, 32)

    with torch.inference_mode():
        expected = model(ecgs, labels)
        actual = prepare_for_inference(model)(ecgs, labels)

    torch.testing.assert_close(actual.logits, expected.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actual.ecg_embeddings, expected.ecg_embeddings, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_counts_the_folds_and_refuses_training_mode(ecgs: torch.Tensor) -> None:
    model = create_ecg_encoder("xresnet1d_small")
    n_convbn = sum(isinstance(m, ConvBN1d) for m in model.modules())

    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)
    assert fold_batchnorm(model.eval()) == n_convbn
    assert fold_batchnorm(model) == 0  # nothing left to fold


@pytest.mark.slow
def test_compiled_encoder_gives_the_eval_outputs(ecgs: torch.Tensor) -> None:
    model = _with_batchnorm_statistics(create_ecg_encoder("xresnet1d_small"), ecgs)

    with torch.inference_mode():
        expected = model(ecgs)
        actual = prepare_for_inference(model, compile=True)(ecgs)

    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
