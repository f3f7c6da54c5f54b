"""The 1-D XResNet family and the encoder registry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from encoders.models import XResNet1d, create_ecg_encoder, list_ecg_encoders, register_ecg_encoder
from encoders.models.xresnet1d import ResBlock1d


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_xresnet1d101_matches_the_reference_size_and_shapes() -> None:
    model = create_ecg_encoder("xresnet1d101").eval()
    assert _n_params(model) == 7_865_984
    assert model.out_channels == 768
    with torch.no_grad():
        assert model(torch.randn(2, 12, 1000)).shape == (2, 768, 32)
        assert model(torch.randn(1, 12, 5000)).shape == (1, 768, 157)


def test_xresnet1d101_stage_layout() -> None:
    model = create_ecg_encoder("xresnet1d101")
    assert [len(stage) for stage in model.stages] == [3, 4, 23, 3]
    assert [stage[-1].convs[-1].conv.out_channels for stage in model.stages] == [256, 512, 512, 768]
    assert [stage[0].convs[1].conv.stride[0] for stage in model.stages] == [1, 2, 2, 2]
    assert all(
        conv.kernel_size[0] == 5 for conv in (block.convs[1].conv for block in model.stages[2])
    )
    assert [layer.conv.out_channels for layer in model.stem] == [32, 32, 64]
    assert all(layer.conv.bias is None for layer in model.stem)
    # Stage 3 keeps 512 channels: its strided first block pools the shortcut without projecting.
    first = model.stages[2][0]
    assert isinstance(first.pool, torch.nn.AvgPool1d)
    assert isinstance(first.proj, torch.nn.Identity)


@pytest.mark.parametrize("name", list_ecg_encoders())
def test_every_encoder_builds_runs_and_trains(name: str) -> None:
    model = create_ecg_encoder(name)
    features = model(torch.randn(2, 12, 1000))
    assert features.shape == (2, model.out_channels, 32)
    pooled = model.pool(features)
    assert pooled.shape == (2, model.out_channels)
    torch.testing.assert_close(pooled, features.mean(dim=-1))
    pooled.square().mean().backward()
    assert model.stem[0].conv.weight.grad is not None
    assert model.stem[0].conv.weight.grad.abs().sum() > 0


def test_sibling_sizes() -> None:
    sizes = {name: _n_params(create_ecg_encoder(name)) for name in list_ecg_encoders()}
    assert sizes["xresnet1d50"] < sizes["xresnet1d101"]
    assert sizes["xresnet1d18"] < sizes["xresnet1d34"]
    assert sizes["xresnet1d_small"] < 1_000_000
    assert create_ecg_encoder("xresnet1d50").out_channels == 768


def test_blocks_start_as_their_shortcut() -> None:
    """The last BN of each block starts at zero, so an unstrided block is relu(x) at init."""
    block = ResBlock1d(256, 64, 4, stride=1, kernel_size=5).eval()
    x = torch.randn(2, 256, 50)
    torch.testing.assert_close(block(x), F.relu(x))
    assert all(bool((layer.bn.weight == 1).all()) for layer in block.convs[:-1])
    assert bool((block.convs[-1].bn.weight == 0).all())


def test_encoder_rejects_wrong_input_and_bad_config() -> None:
    model = create_ecg_encoder("xresnet1d_small")
    with pytest.raises(ValueError, match=r"\(batch, 12, time\)"):
        model(torch.randn(2, 8, 1000))
    with pytest.raises(ValueError, match="odd"):
        XResNet1d([1], [8], 1, kernel_size=4)
    with pytest.raises(ValueError, match="differ in length"):
        XResNet1d([1, 1], [8], 1)


def test_registry_round_trip_through_json() -> None:
    model = create_ecg_encoder("xresnet1d_small", in_channels=8, kernel_size=3)
    stored = json.dumps(model.architecture)
    arch = json.loads(stored)
    assert arch == {"name": "xresnet1d_small", "kwargs": {"in_channels": 8, "kernel_size": 3}}
    rebuilt = create_ecg_encoder(arch["name"], **arch["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    x = torch.randn(2, 8, 600)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_registry_errors() -> None:
    with pytest.raises(KeyError, match="xresnet1d101") as info:
        create_ecg_encoder("resnet9000")
    assert "resnet9000" in str(info.value)
    with pytest.raises(TypeError, match="stem_widths"):
        create_ecg_encoder("xresnet1d_small", stem_widths=torch.tensor([8, 8, 16]))
    with pytest.raises(ValueError, match="already registered"):

        @register_ecg_encoder
        def xresnet1d101() -> XResNet1d:  # pragma: no cover - never built
            raise AssertionError


def _ptbxl_superclasses(root: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    signals = np.load(
        root / "ptbxl_sample" / "signals_100hz.npy", mmap_mode="r", allow_pickle=False
    )[:n]
    labels = pd.read_csv(root / "ptbxl_sample" / "labels.csv").iloc[:n]
    targets = labels.filter(like="super_class:").to_numpy(dtype=np.float32)
    return torch.from_numpy(np.asarray(signals, dtype=np.float32)), torch.from_numpy(targets)


@pytest.mark.shared_data
def test_xresnet1d101_on_real_ptbxl_records(shared_data: Path) -> None:
    signals, _ = _ptbxl_superclasses(shared_data, 4)
    model = create_ecg_encoder("xresnet1d101").eval()
    with torch.no_grad():
        features = model(signals)
    assert features.shape == (4, 768, 32)
    assert torch.isfinite(features).all()
    assert features.std() > 0


@pytest.mark.shared_data
def test_small_encoder_learns_ptbxl_superclasses_on_cpu(shared_data: Path) -> None:
    """xresnet1d_small fits 300 real records for 5 epochs on CPU within two minutes."""
    torch.manual_seed(0)
    signals, targets = _ptbxl_superclasses(shared_data, 300)
    model = create_ecg_encoder("xresnet1d_small")
    head = torch.nn.Linear(model.out_channels, targets.shape[1])
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    def epoch_loss(train: bool) -> float:
        model.train(train)
        total = 0.0
        for start in range(0, len(signals), 32):
            x, y = signals[start : start + 32], targets[start : start + 32]
            with torch.set_grad_enabled(train):
                loss = F.binary_cross_entropy_with_logits(head(model.pool(model(x))), y)
            if train:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total += float(loss.detach()) * len(x)
        return total / len(signals)

    before = epoch_loss(train=False)
    started = time.perf_counter()
    for _ in range(5):
        epoch_loss(train=True)
    elapsed = time.perf_counter() - started
    after = epoch_loss(train=False)
    assert after < before
    assert elapsed < 120
