"""Zero-shot, embeddings and few-shot on a small model trained on the packaged sample."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from encoders.datasets import datasets, open_manifest, record_label_strings, target_labels
from encoders.ecg import open_source
from encoders.inference.predict import macro_auroc
from encoders.inference.zeroshot import ZeroShotClassifier
from encoders.models.ked_model import ModelConfig
from encoders.training import LoopSettings, PretrainConfig, load_checkpoint, pretrain
from encoders.training.finetune import FinetuneConfig, few_shot_indices, finetune
from kb_store.embeddings import EncoderMismatchError
from kb_store.store import KnowledgeBase
from knowledge.llm import LLMSettings
from tests.conftest import copy_kb
from tests.support.openai_server import LoopbackOpenAI
from tests.test_cli_knowledge import ked


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, embedded_kb: Path) -> tuple[Path, Path]:
    """(knowledge base, run folder) of a small model with atrial fibrillation held out."""
    root = tmp_path_factory.mktemp("zeroshot")
    db = copy_kb(embedded_kb, root)
    config = PretrainConfig(
        data="sample",
        out=root / "run",
        db=db,
        vocab="ptbxl",
        holdout=("atrial fibrillation",),
        views=("name", "full"),
        model=ModelConfig(encoder="xresnet1d_small"),
        loop=LoopSettings(epochs=2, batch_size=32),
    )
    pretrain(config)
    return db, config.out


@pytest.fixture
def kb_copy(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the knowledge base the model was trained with (its label vectors cached)."""
    return copy_kb(trained[0], tmp_path)


def sample_records(n: int = 4) -> list:  # type: ignore[type-arg]
    source = open_source("sample")
    return [source.read(ref) for ref in source.refs()[:n]]


def test_predict_scores_any_label_and_falls_back_to_the_name_without_a_provider(
    trained: tuple[Path, Path], kb_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = load_checkpoint(trained[1])
    labels = ["atrial fibrillation", "Brugada pattern", "hyperkalaemia T waves"]
    with KnowledgeBase(kb_copy) as kb, caplog.at_level(logging.WARNING):
        classifier = ZeroShotClassifier(checkpoint, kb)
        table = classifier.predict(sample_records(), labels, views=["name", "full"])
    assert list(table.columns) == ["record_id", "label", "diagnosis", "score", "probability"]
    assert len(table) == 4 * 3 and table["label"].tolist()[:3] == labels
    assert table["probability"].between(0, 1).all()
    assert "hyperkalaemia T waves" in caplog.text and "no LLM provider" in caplog.text
    assert table.loc[table["label"] == "Brugada pattern", "diagnosis"].iloc[0] == "Brugada pattern"


def test_raw_arrays_and_records_give_the_same_scores(
    trained: tuple[Path, Path], kb_copy: Path
) -> None:
    records = sample_records(3)
    signals = np.stack([r.signal for r in records])
    with KnowledgeBase(kb_copy) as kb:
        classifier = ZeroShotClassifier(load_checkpoint(trained[1]), kb)
        from_records = classifier.predict(records, ["sinus rhythm"])
        from_arrays = classifier.predict(
            signals, ["sinus rhythm"], fs=100, units="z-score", bandpass_hz=(0.5, 40.0)
        )
        refiltered = classifier.predict(signals, ["sinus rhythm"], fs=100)
    np.testing.assert_allclose(from_records["score"], from_arrays["score"], rtol=1e-5)
    assert not np.allclose(from_records["score"], refiltered["score"])
    with pytest.raises(ValueError, match=r"\(N, 12, T\)"):
        classifier.predict(signals[:, :6], ["sinus rhythm"])


def test_unknown_label_gets_knowledge_from_the_configured_llm(
    trained: tuple[Path, Path], kb_copy: Path
) -> None:
    checkpoint = load_checkpoint(trained[1])
    # Opted in to proposed knowledge: the generated record is used before anyone reviews it.
    with LoopbackOpenAI() as server, KnowledgeBase(kb_copy, usable=("accepted", "proposed")) as kb:
        llm = (LLMSettings(model="loopback", base_url=server.base_url), "sk-test")
        classifier = ZeroShotClassifier(checkpoint, kb, llm=llm)
        vectors = classifier.label_vectors(labels=["test new diagnosis"], views=["full"])
        assert [r.label for r in server.requests] == ["test new diagnosis"]
        assert vectors.fallback == [] and vectors.entries[0].diagnosis == "test new diagnosis"
        again = classifier.label_vectors(labels=["test new diagnosis"], views=["full"])
        assert len(server.requests) == 1  # stored, not asked again
    assert np.allclose(vectors.per_view["full"].numpy(), again.per_view["full"].numpy())


def test_checkpoint_from_another_text_encoder_is_refused(
    trained: tuple[Path, Path], kb_copy: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    config = json.loads((run / "best.json").read_text())
    config["text_encoder"]["fingerprint"] = "0" * 64
    (run / "best.json").write_text(json.dumps(config))
    with KnowledgeBase(kb_copy) as kb, pytest.raises(EncoderMismatchError, match="trained with"):
        ZeroShotClassifier(load_checkpoint(run), kb)


def test_cli_zeroshot_with_held_out_label_and_view_ensembles(
    trained: tuple[Path, Path], kb_copy: Path, tmp_path: Path
) -> None:
    outputs = {}
    for ensemble in ("vectors", "scores"):
        out = tmp_path / f"{ensemble}.csv"
        result = ked(
            "--db",
            str(kb_copy),
            "zeroshot",
            "--checkpoint",
            str(trained[1]),
            "--data",
            "sample",
            "--split",
            "val",
            "--labels",
            "atrial fibrillation",
            "--labels",
            "sinus rhythm",
            "--view",
            "name",
            "--view",
            "full",
            "--ensemble",
            ensemble,
            "--out",
            str(out),
            "--measurements",
            str(tmp_path / f"{ensemble}-measured.parquet"),
        )
        assert result.returncode == 0, result.stderr
        outputs[ensemble] = pd.read_csv(out)
    table = outputs["vectors"]
    measured = pd.read_parquet(tmp_path / "vectors-measured.parquet")
    assert list(measured["record_id"]) == list(table["record_id"].astype(str).unique())
    assert {"rate_bpm", "qrs_ms", "pr_ms", "qrs_axis_deg", "p_snr", "t_polarity_V1"} <= set(
        measured.columns
    )
    assert measured["rate_bpm"].between(30, 220).mean() > 0.9  # beats found in most recordings
    assert measured["qrs_ms"].between(50, 200).mean() > 0.9
    assert len(table) == 183 * 2 and set(table["target"]) == {0, 1}
    assert not np.allclose(table["score"], outputs["scores"]["score"])
    afib = table[table["label"] == "atrial fibrillation"]
    assert afib["target"].sum() > 0  # the held-out diagnosis has positives to find


def test_cli_encode_writes_vectors_with_record_ids(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    npy, parquet = tmp_path / "emb.npy", tmp_path / "emb.parquet"
    for out, space in ((npy, "projected"), (parquet, "pooled")):
        result = ked(
            "encode",
            "--checkpoint",
            str(trained[1]),
            "--data",
            "sample",
            "--split",
            "val",
            "--space",
            space,
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr
    vectors = np.load(npy, allow_pickle=False)
    sidecar = json.loads((tmp_path / "emb.npy.json").read_text())
    assert vectors.shape == (183, 384) and len(sidecar["record_ids"]) == 183
    table = pq.read_table(parquet)
    assert table.num_rows == 183 and len(table.column("vector")[0]) == 256
    assert table.column("record_id").to_pylist() == sidecar["record_ids"]


def test_few_shot_indices_cover_rare_labels_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((500, 20)) < np.linspace(0.004, 0.3, 20)).astype(np.float32)
    picked = few_shot_indices(targets, 0.1, seed=1)
    assert len(picked) == 50 and picked == few_shot_indices(targets, 0.1, seed=1)
    assert picked != few_shot_indices(targets, 0.1, seed=2)
    present = targets.sum(0) > 0
    assert (targets[picked].sum(0)[present] > 0).all()
    assert len(few_shot_indices(targets, 0.01, seed=1)) == 5


def test_finetune_starts_from_zero_shot_and_selects_on_validation(
    trained: tuple[Path, Path], kb_copy: Path, tmp_path: Path
) -> None:
    config = FinetuneConfig(
        checkpoint=trained[1],
        data="sample",
        out=tmp_path / "ft",
        db=kb_copy,
        vocab="ptbxl",
        fraction=0.1,
        loop=LoopSettings(epochs=2, batch_size=16, lr=1e-2, warmup_epochs=0),
    )
    result = finetune(config)
    # selection on val, the figure on the carved test split that chose nothing
    assert result.eval_split == "test" and result.train_records == round(0.1 * 185)
    # zero training steps give the zero-shot model: recompute zero-shot on the same labels
    checkpoint = load_checkpoint(trained[1])
    with KnowledgeBase(kb_copy) as kb:
        classifier = ZeroShotClassifier(checkpoint, kb)
        vectors = classifier.label_vectors(vocab="ptbxl", views=checkpoint.views).resolved()
    tuned = load_checkpoint(config.out)
    assert tuned.config["kind"] == "finetune-linear"
    assert tuned.labels == [e.label for e in vectors.entries]
    manifest = open_manifest("sample")
    with KnowledgeBase(kb_copy, read_only=True) as kb:
        mapping = target_labels(kb, tuned.entries, record_label_strings(manifest))
    splits = ("test",)
    test = datasets(manifest, tuned.labels, mapping, checkpoint.preprocessing, splits=splits)[
        "test"
    ]
    zero = classifier.scores(test, vectors)
    assert macro_auroc(zero, test.targets)[0] == pytest.approx(
        result.zero_shot_eval_auroc, abs=1e-9
    )
    # evaluating the tuned checkpoint uses its learned label vectors, so it reproduces the result
    with KnowledgeBase(kb_copy) as kb:
        tuned_classifier = ZeroShotClassifier(tuned, kb)
        tuned_vectors = tuned_classifier.label_vectors(vocab="ptbxl", views=tuned.views)
    tuned_scores = tuned_classifier.scores(test, tuned_vectors.resolved())
    assert macro_auroc(tuned_scores, test.targets)[0] == pytest.approx(result.eval_auroc, abs=1e-9)
    # the encoder stayed frozen in the linear probe
    for name, tensor in checkpoint.model.encoder.state_dict().items():
        assert np.array_equal(tensor.numpy(), tuned.model.encoder.state_dict()[name].numpy()), name
