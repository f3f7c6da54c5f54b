"""The pieces of the pretraining recipe: label masks across datasets, view sampling, centred
label vectors, augmentations, and PTB-XL classes held out with their members."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from encoders.datasets import held_out_diagnoses, open_manifest, reported_labels
from encoders.ecg import ECGDataset, Manifest, Preprocessing
from encoders.ecg.dataset import unreported_as_unknown
from encoders.inference.predict import macro_auroc
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.training import PretrainConfig, load_checkpoint, pretrain
from encoders.training.augment import Augmentation
from encoders.training.loop import LabelBank
from encoders.training.losses import AlignmentLoss, contrastive_loss
from kb_store.store import KnowledgeBase
from tests.support.cli import run_ked


def test_unreported_labels_are_unknown_not_negative() -> None:
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]], dtype=np.float32)
    specs = ["ptbxl", "ptbxl", "code15"]
    reported = {"ptbxl": {"AFIB", "LBBB"}, "code15": {"AFIB", "STE"}}

    out = unreported_as_unknown(targets, ["AFIB", "LBBB", "STE"], specs, reported)

    assert out[0, 0] == 1 and out[1, 1] == 0  # reported by ptbxl: kept, negatives stay 0
    assert np.isnan(out[0, 2]) and np.isnan(out[1, 2])  # ptbxl never reports STE
    assert np.isnan(out[2, 1]) and out[2, 2] == 0  # code15 never reports LBBB
    assert not np.isnan(targets).any()  # a copy


def test_two_datasets_mask_each_others_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    sample = open_manifest("sample")
    other = Manifest(sample.table.assign(spec="other").iloc[:50])
    manifest = Manifest.concat([sample, other])
    # the "other" dataset reports only sinus rhythm
    other_rows = manifest.table["spec"] == "other"
    manifest.table.loc[other_rows, "labels"] = pd.Series(
        [("SCP:SR",)] * int(other_rows.sum()), index=manifest.table.index[other_rows]
    )
    mapping = {"SCP:SR": "SR", "SCP:NORM": "NORM"}
    reported = reported_labels(manifest, mapping)
    assert reported["other"] == {"SR"} and reported["sample"] == {"SR", "NORM"}

    data = ECGDataset(manifest, Preprocessing(), ["SR", "NORM"], mapping.get, reported=reported)
    rows = other_rows.to_numpy()
    assert np.isnan(data.targets[rows, 1]).all() and not np.isnan(data.targets[~rows]).any()


def test_losses_and_auroc_leave_unknown_pairs_out() -> None:
    torch.manual_seed(0)
    logits, ecg, labels = torch.randn(6, 3), torch.randn(6, 8), torch.randn(3, 8)
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1.0]])
    unknown = targets.clone()
    unknown[4:, 2] = math.nan
    loss = AlignmentLoss()
    masked = loss(logits, ecg, labels, unknown)
    assert torch.isfinite(masked["loss"])
    # Changing a logit of an unknown pair changes nothing; of a known pair, it does.
    moved = logits.clone()
    moved[4, 2] += 5
    assert torch.allclose(loss(moved, ecg, labels, unknown)["bce"], masked["bce"])
    assert not torch.allclose(
        loss(moved, ecg, labels, targets)["bce"], loss(logits, ecg, labels, targets)["bce"]
    )
    far = labels.clone()
    far[2] = -far[2]
    same = contrastive_loss(ecg[4:], far, unknown[4:], 0.1)
    assert torch.allclose(same, contrastive_loss(ecg[4:], labels, unknown[4:], 0.1))

    scores = np.array([[0.1], [0.9], [0.8], [0.2]])
    column = np.array([[0.0], [1.0], [math.nan], [math.nan]])
    assert macro_auroc(scores, column) == (1.0, 1)


def test_view_bank_draws_one_view_per_label_and_averages_outside_training() -> None:
    torch.manual_seed(0)
    views = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=-1)
    bank = LabelBank(views)
    drawn = [bank() for _ in range(30)]
    for sample in drawn:
        matches = (sample[:, None, :] == views).all(-1)  # (labels, views)
        assert matches.sum(1).tolist() == [1, 1, 1, 1]
    assert len({tuple(s[0].tolist()) for s in drawn}) == 3  # every view of label 0 is drawn
    bank.eval()
    mean = torch.nn.functional.normalize(views.mean(1), dim=-1)
    assert torch.allclose(bank(), mean)
    with pytest.raises(ValueError, match="not trainable"):
        LabelBank(views, trainable=True)


def test_centred_label_space_is_stored_and_applied() -> None:
    model = KedModel(ModelConfig(encoder="xresnet1d_small", text_dim=8, center_labels=True))
    texts = torch.nn.functional.normalize(torch.randn(10, 8) + 3.0, dim=-1)
    model.fit_label_space(texts)
    assert torch.allclose(model.label_center, texts.mean(0))
    assert "label_center" in model.state_dict()
    centred = model.label_space(texts)
    before = (texts @ texts.T).fill_diagonal_(0).mean()
    after = (centred @ centred.T).fill_diagonal_(0).mean()
    assert after < before - 0.5  # the shared direction no longer dominates
    with pytest.raises(ValueError, match="center_labels"):
        KedModel(ModelConfig(encoder="xresnet1d_small", text_dim=8)).fit_label_space(texts)


def test_whitened_label_space_separates_near_duplicate_labels() -> None:
    # Texts vary mostly along 3 directions; two labels differ along a direction they rarely use,
    # as a text encoder puts "left" and "right bundle branch block" together.
    config = ModelConfig(encoder="xresnet1d_small", text_dim=16, center_labels=True)
    generator = torch.Generator().manual_seed(0)
    main = torch.randn(40, 3, generator=generator) @ torch.randn(3, 16, generator=generator)
    texts = main + 0.05 * torch.randn(40, 16, generator=generator) + 4.0
    quiet = torch.linalg.svd(texts - texts.mean(0)).Vh[-1]  # the least-used direction
    pair = torch.stack([texts[0] + quiet, texts[0] - quiet])
    texts, pair = (torch.nn.functional.normalize(t, dim=-1) for t in (texts, pair))
    centred = KedModel(config)
    centred.fit_label_space(texts)
    whitened = KedModel(replace(config, whiten_labels=0.1))
    whitened.fit_label_space(texts)
    assert "label_whitening" in whitened.state_dict()
    cosine = [float(m.label_space(pair).prod(0).sum()) for m in (centred, whitened)]
    assert cosine[1] < cosine[0] - 0.3  # the twins are far apart once whitened
    space = whitened.label_space(texts)
    assert torch.allclose(space.norm(dim=-1), torch.ones(40))
    with pytest.raises(ValueError, match="whiten_labels"):
        KedModel(replace(config, whiten_labels=0.0))


def test_augmentation_is_seeded_and_changes_what_it_should() -> None:
    x = torch.randn(5, 12, 1000)
    same = Augmentation()(x, torch.Generator().manual_seed(1))
    assert torch.equal(same, Augmentation()(x, torch.Generator().manual_seed(1)))
    assert same.shape == x.shape and not torch.equal(same, x)
    off = Augmentation(shift=False, scale=0, wander=0, noise=0, lead_dropout=0)
    assert torch.equal(off(x), x)
    dropped = Augmentation(shift=False, scale=0, wander=0, noise=0, lead_dropout=0.5)(x)
    zero_leads = (dropped.abs().sum(-1) == 0).float().mean()
    assert 0.3 < zero_leads < 0.7
    shifted = Augmentation(scale=0, wander=0, noise=0, lead_dropout=0)(x)
    assert torch.allclose(shifted.sort(-1).values, x.sort(-1).values)  # a circular shift


def test_holding_out_a_statement_holds_out_the_ptbxl_classes_containing_it(
    kb_copy: Path,
) -> None:
    with KnowledgeBase(kb_copy) as kb:
        held = held_out_diagnoses(kb, ["SCP:CLBBB", "SCP:AFIB"])
        ids = {
            name: kb.resolve_many([name])[name].id
            for name in (
                "left bundle branch block",
                "atrial fibrillation",
                "conduction disturbance",
                "myocardial infarction",
                "right bundle branch block",
            )
        }
        with pytest.raises(ValueError, match="not found"):
            held_out_diagnoses(kb, ["no such diagnosis"])
    assert held == {
        ids["left bundle branch block"],
        ids["atrial fibrillation"],
        ids["conduction disturbance"],
    }


def test_pretraining_with_views_centring_and_augmentation_checkpoints_them(
    kb_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    config = PretrainConfig(
        data="sample",
        out=tmp_path / "run",
        db=kb_copy,
        vocab="ptbxl-all",
        holdout=("SCP:CLBBB",),
        loop=replace(
            PretrainConfig(data="", out=tmp_path, db=kb_copy).loop,
            epochs=1,
            batch_size=32,
            max_steps_per_epoch=2,
        ),
    )
    assert config.views == ("name", "summary", "full") and config.loop.augment is not None
    result = pretrain(config)
    assert "super_class:CD" in result.held_out and "CLBBB" in result.held_out
    assert "super_class:MI" in result.train_labels
    checkpoint = load_checkpoint(config.out)
    assert checkpoint.model.config.center_labels
    assert checkpoint.model.label_center.abs().sum() > 0
    assert checkpoint.config["views"] == ["name", "summary", "full"]
    assert checkpoint.config["training"]["loop"]["augment"]["lead_dropout"] == 0.1

    # The label space the model scores in: centring pulls LBBB and RBBB apart.
    pair = ["--labels", "left bundle branch block", "--labels", "right bundle branch block"]
    common = ["--db", str(kb_copy), "labels", "similarity", *pair, "--view", "full"]
    code, raw, _ = run_ked(capsys, *common)
    assert code == 0
    code, scoring, _ = run_ked(capsys, *common, "--checkpoint", str(config.out))
    assert code == 0
    assert _first_cosine(scoring) < _first_cosine(raw) - 0.05


def _first_cosine(output: str) -> float:
    """The cosine of the first pair a ``ked labels similarity`` view block prints."""
    line = next(line for line in output.splitlines() if line.startswith("  0."))
    return float(line.split()[0])


def test_pretrain_command_passes_pooling_and_weight_average_to_the_run(
    kb_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    common = ["--db", str(kb_copy), "pretrain", "--data", "sample", "--vocab", "ptbxl"]
    small = ["--view", "name", "--epochs", "1", "--max-steps-per-epoch", "2", "--out", str(out)]
    code, _, err = run_ked(capsys, *common, *small, "--pooling", "max")
    assert code == 2 and "--pooling is mean or mean+max" in err
    code, _, _ = run_ked(capsys, *common, *small, "--pooling", "mean+max", "--ema-decay", "0.9")
    assert code == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.model.config.pooling == "mean+max"
    assert checkpoint.config["training"]["loop"]["ema_decay"] == 0.9
