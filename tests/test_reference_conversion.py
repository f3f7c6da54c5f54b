"""ECGFM-KED's released weights end to end.

A checkpoint in the reference's module and key layout (``tests/support/reference_layout.py``)
whose text side is the default text encoder's BERT (all-MiniLM-L6-v2, 384-d, available offline)
"fine-tuned" (pooler and last layer changed), as the reference fine-tuned Bio_ClinicalBERT, is
converted with ``ked convert-reference`` and ``convert_reference``, then used by ``ked
zeroshot``, ``eval``, ``encode`` and ``finetune`` on packaged-sample recordings with the real
knowledge base; the scores are those of the reference's own modules and text tower. A checkpoint
at the reference's own 768 shows the refusal of vectors of another width.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from encoders.datasets import evaluation_preprocessing
from encoders.ecg import ECGDataset, open_source, sample_data_dir
from encoders.inference.zeroshot import ZeroShotClassifier
from encoders.models import LabelAdapter, convert_reference, reference_text_encoder
from encoders.models.checkpoint import load_checkpoint
from encoders.models.ked_model import LabelVectorError
from encoders.text import label_entries, view_texts
from encoders.text.spec import resolve_model_path
from kb_store.store import KnowledgeBase
from tests.conftest import copy_kb
from tests.support.cli import run_ked
from tests.support.reference_layout import ReferenceModules, save_reference_checkpoint
from tests.support.unsafe import Payload

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LABELS = ("atrial fibrillation", "sinus rhythm")
MINILM = ("--text-encoder", "all-MiniLM-L6-v2")  # the reference's settings otherwise
LABEL_ARGS = ("--labels", LABELS[0], "--labels", LABELS[1])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's folder; dataset manifests are cached in it."""
    folder = tmp_path_factory.mktemp("reference_conversion")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KED_CACHE", str(folder / "cache"))
        yield folder


@pytest.fixture(scope="module")
def tower() -> PreTrainedModel:
    """all-MiniLM-L6-v2's BERT with its pooler and last layer moved, as by fine-tuning."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_model_path("all-MiniLM-L6-v2")).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for weight in (model.pooler.dense.weight, model.encoder.layer[-1].output.dense.weight):
            weight.add_(0.05 * torch.randn_like(weight))
    return model


@pytest.fixture(scope="module")
def reference(root: Path, tower: PreTrainedModel) -> ReferenceModules:
    """A released-layout checkpoint (one decoder layer, to keep it small) and its modules."""
    return save_reference_checkpoint(
        root / "ecgfm_ked_384.pt", text_dim=384, decoder_layers=1, text_tower=tower.state_dict()
    )


@pytest.fixture(scope="module")
def converted(reference: ReferenceModules, root: Path) -> Path:
    """The reference checkpoint converted through the API, all-MiniLM-L6-v2's architecture and
    tokenizer carrying its text tower."""
    spec = reference_text_encoder("all-MiniLM-L6-v2")
    return convert_reference(reference.path, root / "converted", text_encoder=spec).path


@pytest.fixture(scope="module")
def recordings(root: Path) -> str:
    """22 packaged-sample recordings as a ``ptbxl-array`` dataset: train 8, val 6, test 8
    (sample train records), with 2, 2 and 3 of atrial fibrillation."""
    folder = sample_data_dir()
    table = pd.read_csv(folder / "ptbxl_400_labels.csv")
    picked: list[pd.DataFrame] = []
    for source, afib, other in (("train", 2, 6), ("val", 2, 4)):
        in_split = table[table["split"] == source]
        picked += [in_split[in_split["rhythm:AFIB"] == 1][:afib]]
        picked += [in_split[in_split["rhythm:AFIB"] == 0][:other]]
    train = table[table["split"] == "train"]
    test = pd.concat(
        [train[train["rhythm:AFIB"] == 1][2:5], train[train["rhythm:AFIB"] == 0][6:11]]
    )
    subset = pd.concat([*picked, test.assign(split="test")])
    with np.load(folder / "ptbxl_400.npz", allow_pickle=False) as archive:
        signals = archive["signals"][subset.index.to_numpy()]
    data = root / "recordings"
    data.mkdir()
    np.save(data / "signals_100hz.npy", signals)
    subset.to_csv(data / "labels.csv", index=False)
    return f"ptbxl-array:{data}"


@pytest.fixture
def kb(curated_kb: Path, tmp_path: Path) -> Path:
    """The curated knowledge base; label vectors come from the converted text tower."""
    return copy_kb(curated_kb, tmp_path)


def _windows(data: str, converted: Path) -> tuple[list[str], torch.Tensor]:
    """Record ids and model inputs (N, 12, 1000) of the dataset, as ked scores them."""
    source = open_source(data)
    records = [source.read(ref) for ref in source.refs()]
    preprocessing = evaluation_preprocessing(load_checkpoint(converted).preprocessing)
    dataset = ECGDataset(records, preprocessing, [], lambda _: None)
    return list(dataset.record_ids), torch.stack([dataset[i][0] for i in range(len(dataset))])


def _error(err: str) -> str:
    """The one ``error:`` line a refused command prints (progress bars aside)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _reference_logits(
    reference: ReferenceModules, x: torch.Tensor, label_vectors: torch.Tensor
) -> torch.Tensor:
    """What the reference's own modules give: softmax(pair)[..., 1] as a logit, l1 - l0."""
    with torch.no_grad():
        tokens = reference.ecg_model(x).transpose(1, 2)
        pair = reference.tqn(tokens, reference.mlp_embed(label_vectors))
    return pair[..., 1] - pair[..., 0]


def test_converted_checkpoint_records_the_reference_setup_and_its_outputs(
    reference: ReferenceModules, converted: Path, recordings: str
) -> None:
    checkpoint = load_checkpoint(converted)
    config = checkpoint.config
    assert config["kind"] == "reference" and checkpoint.views == ["name"]
    assert config["model"]["encoder"] == "xresnet1d101" and config["model"]["head"] == "decoder"
    assert config["model"]["text_dim"] == 384
    assert config["model"]["adapter_kwargs"]["out_dim"] == 768
    assert config["preprocessing"]["fs"] == 100 and config["preprocessing"]["window_s"] == 10
    assert config["preprocessing"]["normalize"] == "zscore"
    text = config["text_encoder"]
    assert text["model"] == "./best.text_encoder"  # beside the checkpoint, wherever it moves
    assert checkpoint.text_encoder["model"] == str(converted.with_name("best.text_encoder"))
    assert (text["backend"], text["pooling"], text["max_length"]) == ("transformers", "pooler", 256)
    assert text["normalize"] is False and len(text["fingerprint"]) == 64
    assert config["reference"]["epoch"] == 3 and config["reference"]["missing_keys"] == []
    assert checkpoint.entries == [] and checkpoint.label_vectors.shape == (0, 384)

    _, x = _windows(recordings, converted)
    torch.manual_seed(2)
    label_vectors = torch.randn(5, 384)
    with torch.no_grad():
        output = checkpoint.model(x[:4], label_vectors)
        pooled = reference.ecg_model(x[:4]).mean(-1)
    expected = _reference_logits(reference, x[:4], label_vectors)
    torch.testing.assert_close(output.logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.ecg_embeddings, pooled)
    with pytest.raises(LabelVectorError, match="dim 768 given to a model that scores 384-d"):
        checkpoint.model(x[:1], torch.randn(2, 768))
    with pytest.raises(ValueError, match="a residual adapter keeps the width 384"):
        LabelAdapter(384, out_dim=768)


def test_cli_conversion_equals_the_api_and_ked_zeroshot_scores_with_it(
    reference: ReferenceModules,
    tower: PreTrainedModel,
    converted: Path,
    recordings: str,
    kb: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cli"
    from transformers import AutoTokenizer

    code, stdout, err = run_ked(
        capsys, "convert-reference", str(reference.path), "--out", str(out), *MINILM
    )
    assert code == 0, err
    assert "xresnet1d101 + 1-layer query decoder" in stdout and "384-d" in stdout
    assert f"checkpoint {out / 'best.safetensors'}" in stdout
    cli_config = json.loads((out / "best.json").read_text())
    api_config = json.loads(converted.with_suffix(".json").read_text())
    assert cli_config["text_encoder"]["model"] == "./best.text_encoder"
    assert cli_config == api_config  # the same text tower files: the same fingerprint
    cli_tensors, api_tensors = load_file(out / "best.safetensors"), load_file(converted)
    assert cli_tensors.keys() == api_tensors.keys()
    assert all(torch.equal(cli_tensors[k], api_tensors[k]) for k in api_tensors)

    predictions = tmp_path / "zeroshot.csv"
    args = ("--checkpoint", str(out), "--data", recordings, "--out", str(predictions))
    code, stdout, err = run_ked(
        capsys, "--db", str(kb), "zeroshot", *args, *LABEL_ARGS, "--no-measured-criteria"
    )
    assert code == 0, err
    assert "scored 22 recordings x 2 labels" in stdout
    table = pd.read_csv(predictions, dtype={"record_id": str})
    scores = table.pivot(index="record_id", columns="label", values="score")

    with KnowledgeBase(kb) as store:
        texts = view_texts(store, label_entries(store, labels=LABELS), ["name"])["name"]
        classifier = ZeroShotClassifier(load_checkpoint(out), store)
        vectors = classifier.label_vectors(labels=LABELS, views=["name"]).combined()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    tokens = tokenizer(texts, padding="max_length", max_length=256, return_tensors="pt")
    with torch.no_grad():
        tower_vectors = tower(**tokens).pooler_output  # the reference's text tower
    torch.testing.assert_close(vectors, tower_vectors, rtol=1e-4, atol=1e-5)
    record_ids, x = _windows(recordings, converted)
    expected = _reference_logits(reference, x, tower_vectors).numpy()
    np.testing.assert_allclose(
        scores.loc[record_ids, list(LABELS)].to_numpy(), expected, rtol=1e-3, atol=1e-4
    )
    truth = pd.read_csv(Path(recordings.partition(":")[2]) / "labels.csv")
    positives = {LABELS[0]: truth["rhythm:AFIB"].sum(), LABELS[1]: truth["rhythm:SR"].sum()}
    assert table.groupby("label")["target"].sum().to_dict() == positives


def test_ked_eval_encode_and_finetune_accept_the_converted_checkpoint(
    reference: ReferenceModules,
    converted: Path,
    recordings: str,
    kb: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ("--checkpoint", str(converted), "--data", recordings)
    code, stdout, err = run_ked(
        capsys, "--db", str(kb), "eval", *common, *LABEL_ARGS, "--out", str(tmp_path / "eval"),
        "--resamples", "20",
    )  # fmt: skip
    assert code == 0, err
    assert "zero-shot macro AUROC on the test split" in stdout
    knowledge = next(line for line in stdout.splitlines() if "knowledge (name)" in line)
    assert "all labels" in knowledge and "undefined" not in knowledge

    embeddings = tmp_path / "vectors.npy"
    code, stdout, err = run_ked(capsys, "encode", *common, "--out", str(embeddings))
    assert code == 0, err
    assert "wrote 22 x 768 embeddings" in stdout
    record_ids, x = _windows(recordings, converted)
    with torch.no_grad():
        pooled = reference.ecg_model(x).mean(-1).numpy()
    np.testing.assert_allclose(
        np.load(embeddings, allow_pickle=False), pooled, rtol=1e-4, atol=1e-5
    )
    sidecar = json.loads(embeddings.with_name("vectors.npy.json").read_text())
    assert sidecar["record_ids"] == record_ids

    tuned = tmp_path / "tuned"
    code, stdout, err = run_ked(
        capsys, "--db", str(kb), "finetune", *common, *LABEL_ARGS, "--out", str(tuned),
        "--epochs", "1", "--batch-size", "4", "--fraction", "0.3",
    )  # fmt: skip
    assert code == 0, err
    assert "linear on 2 records" in stdout
    result = load_checkpoint(tuned)
    assert result.config["kind"] == "finetune-linear"
    assert result.config["parent"] == str(converted)
    parent = load_checkpoint(converted)
    assert result.config["model"] == parent.config["model"]
    assert result.config["text_encoder"] == parent.text_encoder  # the tower's folder, resolved
    assert result.labels == list(LABELS)


def test_refuses_text_vectors_of_another_width(
    root: Path, tmp_path: Path, converted: Path, kb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = save_reference_checkpoint(root / "ecgfm_ked_768.pt", decoder_layers=1).path
    out = tmp_path / "wide"
    code, _, err = run_ked(capsys, "convert-reference", str(wide), "--out", str(out), *MINILM)
    assert code == 2
    assert "ecgfm_ked_768.pt: its label side takes 768-d" in _error(err)
    assert "'all-MiniLM-L6-v2' gives 384-d ones" in err
    assert not out.exists()

    moved = tmp_path / "other_encoder"
    moved.mkdir()
    config = json.loads(converted.with_suffix(".json").read_text())
    config["text_encoder"]["fingerprint"] = "0" * 64  # vectors of another encoder's files
    (moved / "best.json").write_text(json.dumps(config))
    (moved / "best.safetensors").write_bytes(converted.read_bytes())
    shutil.copytree(converted.with_name("best.text_encoder"), moved / "best.text_encoder")
    code, _, err = run_ked(
        capsys, "--db", str(kb), "zeroshot", "--checkpoint", str(moved), "--data", "sample",
        "--out", str(tmp_path / "p.csv"), *LABEL_ARGS,
    )  # fmt: skip
    assert code == 2 and "trained with text encoder 000000000000" in _error(err)


def test_refuses_files_that_are_not_a_usable_reference_checkpoint(
    reference: ReferenceModules,
    converted: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def convert(src: Path, *extra: str) -> tuple[int, str, str]:
        out = str(tmp_path / src.stem)
        return run_ked(capsys, "convert-reference", str(src), "--out", out, *MINILM, *extra)

    released = torch.load(reference.path, weights_only=True)

    def variant(name: str, **changes: dict[str, torch.Tensor]) -> Path:
        path = tmp_path / name
        torch.save({**released, **changes}, path)
        return path

    marker = tmp_path / "unpickled"
    torch.save({"ecg_model": {}, "model": {}, "config": Payload(marker)}, tmp_path / "pickle.pt")
    torch.save(reference.ecg_model.state_dict(), tmp_path / "plain.pt")
    partial = dict(released["ecg_model"])
    del partial["7.2.convs.2.1.weight"], partial["7.2.convpath.0.2.1.weight"]  # and its alias
    partial["8.weight"] = torch.zeros(5, 768)  # a classification head ked does not have
    head = dict(released["model"], **{"mlp_head.0.weight": torch.zeros(5, 768)})
    narrow = dict(released["text_encoder"])
    narrow["mlp_embed.4.weight"] = torch.zeros(512, 768)  # 512-d queries for a 768-d decoder
    narrow["mlp_embed.4.bias"] = torch.zeros(512)
    no_pooler = {k: v for k, v in released["text_encoder"].items() if "pooler" not in k}
    refusals = {
        tmp_path / "pickle.pt": "pickle.pt: cannot be read with torch.load(weights_only=True)",
        converted: "best.safetensors: a safetensors file, not ECGFM-KED's",
        tmp_path / "plain.pt": "plain.pt: looks like a plain state_dict",
        variant("partial.pt", ecg_model=partial): "partial.pt: strict load failed",
        variant("head.pt", model=head): "head.pt: 1 model tensors do not fit",
        variant("narrow.pt", text_encoder=narrow): "narrow.pt: text_encoder mlp_embed gives 512-d",
        variant("no_pooler.pt", text_encoder=no_pooler): "bert_model.* do not fit all-MiniLM",
    }
    for src, message in refusals.items():
        code, _, err = convert(src)
        assert code == 2 and message in _error(err), src
        assert not (tmp_path / src.stem).exists()
    assert not marker.exists()

    bad_settings = {
        (*MINILM, "--view", "symptoms"): "unknown view 'symptoms'",
        ("--text-encoder", str(tmp_path / "no_such_model")): "no_such_model' is not a local folder",
        (*MINILM, "--text-backend", "sentence-transformers"): "runs with the transformers backend",
    }
    for extra, message in bad_settings.items():
        code, _, err = run_ked(
            capsys, "convert-reference", str(reference.path), "--out", str(tmp_path / "x"), *extra
        )
        assert code == 2 and message in _error(err)
    assert not (tmp_path / "x").exists()

    code, _, err = convert(tmp_path / "partial.pt", "--no-strict")
    assert code == 0 and "not strict: 1 ked keys kept their initial values" in err
    recorded = load_checkpoint(tmp_path / "partial").config["reference"]
    assert recorded["missing_keys"] == ["encoder.stages.3.2.convs.2.bn.weight"]
    assert recorded["unexpected_keys"] == ["ecg_model.8.weight"]
    code, _, err = convert(tmp_path / "partial.pt", "--no-strict")
    assert code == 2 and "already exists; pass --force" in err
    assert convert(tmp_path / "partial.pt", "--no-strict", "--force")[0] == 0

    with caplog.at_level(logging.WARNING):
        assert convert(reference.path, "--text-weights", "base")[0] == 0
    assert "fine-tuned text tower (104 bert_model tensors) is left out" in caplog.text
    published = load_checkpoint(tmp_path / reference.path.stem).config["text_encoder"]
    assert published["model"] == "all-MiniLM-L6-v2"
    assert (
        published["fingerprint"] != load_checkpoint(converted).config["text_encoder"]["fingerprint"]
    )
    assert not (tmp_path / reference.path.stem / "best.text_encoder").exists()
