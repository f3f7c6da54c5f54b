"""Pretraining on real records: the loss falls, checkpoints reload exactly, DDP runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from encoders.datasets import datasets, open_manifest, record_label_strings, target_labels
from encoders.inference.predict import macro_auroc, predict
from encoders.models.checkpoint import CheckpointError
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.training import LoopSettings, PretrainConfig, load_checkpoint, pretrain
from kb_store.store import KnowledgeBase
from tests.conftest import copy_kb
from tests.support.cli import run_ked
from tests.support.unsafe import Payload


@pytest.fixture
def config(embedded_kb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PretrainConfig:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    db = copy_kb(embedded_kb, tmp_path)
    return PretrainConfig(
        data="sample",
        out=tmp_path / "run",
        db=db,
        vocab="ptbxl",
        views=("name",),
        model=ModelConfig(encoder="xresnet1d_small"),
        loop=LoopSettings(epochs=1, batch_size=32, max_steps_per_epoch=4),
    )


def test_packaged_sample_trains_and_checkpoint_reloads_to_identical_outputs(
    config: PretrainConfig,
) -> None:
    result = pretrain(replace(config, holdout=("atrial fibrillation",)))
    assert result.best_epoch == 1 and (config.out / "best.safetensors").is_file()
    assert "AFIB" in result.held_out and "AFIB" not in result.train_labels
    checkpoint = load_checkpoint(config.out)
    assert checkpoint.labels == result.train_labels
    assert checkpoint.config["text_encoder"]["fingerprint"]
    assert checkpoint.config["preprocessing"]["fs"] == 100.0
    # the same weights from the resume state give identical outputs
    state = torch.load(config.out / "last.pt", weights_only=True)
    fresh = KedModel(checkpoint.model.config)
    weights = {
        k.removeprefix("model."): v for k, v in state["model"].items() if k != "bank.vectors"
    }
    fresh.load_state_dict(weights)
    fresh.eval()
    x = torch.randn(3, 12, 1000)
    with torch.inference_mode():
        expected = fresh(x, checkpoint.label_vectors).logits
        got = checkpoint.model(x, checkpoint.label_vectors).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # and recomputing the validation metric from the checkpoint gives the recorded value
    manifest = open_manifest("sample")
    with KnowledgeBase(config.db, read_only=True) as kb:
        mapping = target_labels(kb, checkpoint.entries, record_label_strings(manifest))
    val = datasets(manifest, checkpoint.labels, mapping, checkpoint.preprocessing)["val"]
    scores, targets = predict(
        checkpoint.model, val, checkpoint.label_vectors, 64, torch.device("cpu")
    )
    recorded = json.loads((config.out / "metrics.jsonl").read_text().splitlines()[0])
    assert macro_auroc(scores, targets)[0] == pytest.approx(recorded["val_macro_auroc"], abs=1e-9)


def test_resume_continues_after_the_last_epoch(config: PretrainConfig) -> None:
    pretrain(config)
    resumed = pretrain(replace(config, loop=replace(config.loop, epochs=2), resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert len((config.out / "metrics.jsonl").read_text().splitlines()) == 2


def test_weight_average_is_what_is_validated_saved_and_resumed(config: PretrainConfig) -> None:
    averaged = replace(config, loop=replace(config.loop, ema_decay=0.5))
    pretrain(averaged)
    state = torch.load(config.out / "last.pt", weights_only=True)
    raw = {k.removeprefix("model."): v for k, v in state["model"].items() if k != "bank.vectors"}
    ema = {
        k.removeprefix("module.model."): v
        for k, v in state["ema"].items()
        if k.startswith("module.model.")
    }
    saved = load_checkpoint(config.out).model.state_dict()
    name = "projection.net.0.weight"
    torch.testing.assert_close(saved[name], ema[name], rtol=0, atol=0)
    assert not torch.equal(saved[name], raw[name])  # the average, not the last weights
    resumed = pretrain(replace(averaged, loop=replace(averaged.loop, epochs=2), resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    with pytest.raises(CheckpointError, match="ema_decay"):
        pretrain(replace(config, loop=replace(config.loop, epochs=3), resume=True))


@pytest.mark.shared_data
@pytest.mark.slow
def test_training_loss_falls_on_the_shared_ptbxl_sample(
    config: PretrainConfig, shared_data: Path
) -> None:
    result = pretrain(
        replace(
            config,
            data=f"ptbxl-array:{shared_data / 'ptbxl_sample'}",
            views=("full",),
            loop=LoopSettings(epochs=3, batch_size=32),
        )
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.9
    assert result.best_val_auroc > 0.6
    assert load_checkpoint(config.out).config["epoch"] == result.best_epoch


def test_two_process_gloo_ddp_run(config: PretrainConfig) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "ked",
        "--db",
        str(config.db),
        "pretrain",
        "--data",
        "sample",
        "--vocab",
        "ptbxl",
        "--view",
        "name",
        "--encoder",
        "xresnet1d_small",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-steps-per-epoch",
        "3",
        "--out",
        str(config.out),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best epoch 1" in result.stdout
    assert len((config.out / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_checkpoint(config.out).config["training"]["loop"]["batch_size"] == 16


def test_resume_from_a_bad_last_pt_is_one_line_naming_it(
    config: PretrainConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--db", str(config.db), "pretrain", "--data", "sample", "--vocab", "ptbxl"]
    args += ["--view", "name", "--encoder", "xresnet1d_small", "--epochs", "1"]
    args += ["--max-steps-per-epoch", "1", "--out", str(config.out), "--device", "cpu"]
    code, _, err = run_ked(capsys, *args)
    assert code == 0, err
    last = config.out / "last.pt"
    good = last.read_bytes()
    marker = config.out / "code-ran"
    torch.save({"model": Payload(marker)}, config.out / "unsafe.pt")
    cases = {
        "not a readable ked training state": [
            good[: len(good) // 2],
            b"not a torch file",
            (config.out / "unsafe.pt").read_bytes(),
        ],
        "cannot resume this run from it": [good],  # a run of another model (--adapter)
    }
    for reason, contents in cases.items():
        for content in contents:
            last.write_bytes(content)
            extra = ["--adapter"] if reason.startswith("cannot") else []
            code, _, err = run_ked(capsys, *args, "--resume", *extra)
            assert code == 2 and "Traceback" not in err
            assert err.strip().splitlines()[-1].startswith(f"error: {last}: {reason}")
    assert not marker.exists()
