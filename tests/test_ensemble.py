"""A model of several ECG towers (``ModelConfig.members``): towers initialised apart, logits
averaged, each tower trained exactly as if alone, and the ensemble through the command line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from encoders.ecg import Preprocessing
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text.labels import LabelEntry
from encoders.training import load_checkpoint
from encoders.training.loop import LabelBank, LoopSettings, Run, fit
from tests.support.cli import run_ked

_SMALL = ModelConfig(encoder="xresnet1d_small", text_dim=8)


def test_towers_start_apart_and_their_logits_are_averaged() -> None:
    torch.manual_seed(0)
    model = KedModel(replace(_SMALL, members=3)).eval()
    x, labels = torch.randn(4, 12, 1000), torch.randn(5, 8)
    out = model(x, labels)

    assert len(model.towers()) == 3 and len(out.members) == 3
    member_logits = torch.stack([m.logits for m in out.members])
    assert torch.allclose(out.logits, member_logits.mean(0))
    assert not torch.allclose(member_logits[0], member_logits[1])  # initialised apart
    assert model.embed(x).shape == (4, 8)
    assert model.pooled(x).shape == (4, 3 * model.encoder.out_channels)
    single = KedModel(_SMALL)
    assert not any(key.startswith("others.") for key in single.state_dict())  # old layout
    with pytest.raises(ValueError, match="members"):
        KedModel(replace(_SMALL, members=0))


def _fit(model: KedModel, out: Path) -> dict[str, torch.Tensor]:
    """One short seeded training run of ``model`` on fixed random data; its saved weights."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, 12, 1000, generator=generator)
    targets = (torch.rand(24, 3, generator=generator) < 0.4).float()
    data = TensorDataset(x, torch.ones(24, 12), targets)
    bank = LabelBank(torch.nn.functional.normalize(torch.randn(3, 8, generator=generator), dim=-1))
    entries = [LabelEntry(f"L{i}", f"L{i}", None, i, f"L{i}") for i in range(3)]
    settings = LoopSettings(epochs=2, batch_size=8, lr=1e-2, seed=3)
    torch.manual_seed(5)
    fit(
        model,
        bank,
        data,
        data,
        settings,
        Run(out, entries, Preprocessing(), {}),
        device=torch.device("cpu"),
    )
    return {k: v for k, v in load_checkpoint(out).model.state_dict().items()}


def test_each_tower_learns_exactly_as_if_trained_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pair = KedModel(replace(_SMALL, members=2))
    start = _second_tower(pair.state_dict())
    alone = KedModel(_SMALL)
    alone.load_state_dict(start)
    trained_pair, trained_alone = _fit(pair, tmp_path / "pair"), _fit(alone, tmp_path / "alone")

    second = _second_tower(trained_pair)
    assert second.keys() == trained_alone.keys()
    for key, value in trained_alone.items():
        assert torch.allclose(second[key], value, atol=1e-6), key
    assert any(not torch.equal(second[key], start[key]) for key in start)  # it did train


def _second_tower(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The second tower's weights in ``state``, named as a single model's."""
    prefix = "others.0."
    return {k[len(prefix) :]: v.clone() for k, v in state.items() if k.startswith(prefix)}


def test_pretrain_encode_and_zeroshot_with_an_ensemble(
    kb_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    db = ["--db", str(kb_copy)]
    pretrain = ["pretrain", "--data", "sample", "--vocab", "ptbxl", "--view", "name"]
    small = ["--epochs", "1", "--max-steps-per-epoch", "2", "--members", "2", "--out", str(run)]
    code, _, _ = run_ked(capsys, *db, *pretrain, *small)
    assert code == 0
    checkpoint = load_checkpoint(run)
    assert checkpoint.model.config.members == 2 and len(checkpoint.model.towers()) == 2

    vectors, predictions = tmp_path / "pooled.npy", tmp_path / "predictions.csv"
    on_val = ["--checkpoint", str(run), "--data", "sample", "--split", "val"]
    code, _, _ = run_ked(capsys, "encode", *on_val, "--out", str(vectors), "--space", "pooled")
    assert code == 0
    assert (
        np.load(vectors, allow_pickle=False).shape[1] == 2 * checkpoint.model.encoder.out_channels
    )
    query = ["--labels", "atrial fibrillation", "--out", str(predictions)]
    code, _, _ = run_ked(capsys, *db, "zeroshot", *on_val, *query)
    assert code == 0
    table = pd.read_csv(predictions)
    assert set(table["label"]) == {"atrial fibrillation"} and table["score"].notna().all()

    # A linear probe trains the head of every tower and nothing else.
    tuned = tmp_path / "tuned"
    probe = ["--labels", "atrial fibrillation", "--labels", "sinus rhythm", "--epochs", "1"]
    code, _, _ = run_ked(capsys, *db, "finetune", *on_val[:4], *probe, "--out", str(tuned))
    assert code == 0
    before, after = checkpoint.model.state_dict(), load_checkpoint(tuned).model.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(".head." in f".{key}" for key in changed)
    assert {key.startswith("others.") for key in changed} == {True, False}
