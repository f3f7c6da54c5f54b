"""Drift after a regeneration: label vectors per view (real text model), and zero-shot AUROC
with the old and new vectors (a tiny checkpoint on the packaged sample)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from encoders.datasets import open_manifest
from encoders.ecg import Preprocessing
from encoders.inference.drift import auroc_drift, vector_drift, version_pairs
from encoders.inference.zeroshot import ZeroShotClassifier
from encoders.models.checkpoint import load_checkpoint, save_checkpoint
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text import Embedder, EncoderSpec, LabelEntry
from kb_store.store import KnowledgeBase, Provenance, UnknownVersionError
from knowledge.curated import load_pack
from knowledge.schema import DiagnosisKnowledge
from tests.support.cli import run_ked

PACK = load_pack()


def regenerated(name: str, edit: Any) -> DiagnosisKnowledge:
    record = PACK.resolve(name)
    assert record is not None
    data = record.model_dump(mode="json")
    edit(data)
    return DiagnosisKnowledge.model_validate(data)


def rewrite_summary(data: dict[str, Any]) -> None:
    data["summary"] = (
        "A regular narrow-complex rhythm at 60-100 bpm with upright P waves in II; "
        "this LLM version rewrote the summary entirely."
    )
    data["rhythm"]["regularity"] = "regular"


def add_caveat(data: dict[str, Any]) -> None:
    data["caveats"] = [*data["caveats"], "an extra caveat from the LLM"]


@pytest.fixture(scope="module")
def drift_kb(curated_kb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The curated pack plus LLM versions of two diagnoses: one rewritten, one barely."""
    path = tmp_path_factory.mktemp("drift") / "kb.duckdb"
    path.write_bytes(curated_kb.read_bytes())
    with KnowledgeBase(path) as kb:
        for name, edit in [("atrial fibrillation", rewrite_summary), ("sinus rhythm", add_caveat)]:
            kb.add_knowledge(regenerated(name, edit), Provenance("llm", model="test"))
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(drift_kb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint whose text encoder is the default one, so it scores its vectors."""
    with KnowledgeBase(drift_kb, read_only=True) as kb:
        embedder = Embedder(kb, EncoderSpec())
        text = {**embedder.description, "fingerprint": embedder.fingerprint}
    torch.manual_seed(0)
    model = KedModel(ModelConfig(encoder="xresnet1d_small", text_dim=384))
    entries = [LabelEntry("AFIB", "AFIB", "AFIB", None, None)]
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    extra = {"views": ["summary"], "text_encoder": text}
    save_checkpoint(path, model, torch.randn(1, 384), entries, Preprocessing(), extra)
    return path


def test_version_pairs(drift_kb: Path) -> None:
    with KnowledgeBase(drift_kb, read_only=True) as kb:
        every = version_pairs(kb)
        assert sorted((p.name, p.old.version, p.new.version) for p in every) == [
            ("atrial fibrillation", 1, 2),
            ("sinus rhythm", 1, 2),
        ]
        [back] = version_pairs(kb, ["AFIB"], from_version=2, to_version=1)
        assert (back.old.version, back.new.version) == (2, 1)
        with pytest.raises(UnknownVersionError, match="only one knowledge version"):
            version_pairs(kb, ["1AVB"])


def test_vector_drift_ranks_the_rewritten_view_first(drift_kb: Path) -> None:
    with KnowledgeBase(drift_kb) as kb:
        moved = vector_drift(Embedder(kb, EncoderSpec()), version_pairs(kb), ["name", "summary"])
    by_key = {(d.diagnosis, d.view): d for d in moved}
    assert moved[0].diagnosis == "atrial fibrillation" and moved[0].view == "summary"
    assert moved[0].text_changed and moved[0].cosine < 0.9
    for unchanged in [("atrial fibrillation", "name"), ("sinus rhythm", "summary")]:
        assert not by_key[unchanged].text_changed
        assert by_key[unchanged].cosine == pytest.approx(1.0, abs=1e-5)


def test_auroc_drift_scores_old_and_new_vectors_side_by_side(
    drift_kb: Path, tiny_checkpoint: Path
) -> None:
    with KnowledgeBase(drift_kb) as kb:
        classifier = ZeroShotClassifier(load_checkpoint(tiny_checkpoint), kb)
        pairs = version_pairs(kb)
        rows = auroc_drift(classifier, open_manifest("sample"), pairs, ["summary"], "val")
    by_name = {r.diagnosis: r for r in rows}
    af, sinus = by_name["atrial fibrillation"], by_name["sinus rhythm"]
    assert af.positives > 0 and sinus.positives > 0
    assert 0.0 <= af.old_auroc <= 1.0 and 0.0 <= af.new_auroc <= 1.0  # type: ignore[operator]
    assert af.old_auroc != af.new_auroc  # another summary, another vector, other scores
    assert sinus.old_auroc == pytest.approx(sinus.new_auroc)  # the summary did not change
    assert rows[0].diagnosis == "atrial fibrillation"  # the largest change first


def test_cli_drift(
    drift_kb: Path,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = ("--db", str(Path(tmp_path / "kb.duckdb")))
    Path(db[1]).write_bytes(drift_kb.read_bytes())
    code, out, err = run_ked(capsys, *db, "kb", "drift", "--all", "--view", "summary", "--json")
    assert code == 0, err
    moved = json.loads(out)["vectors"]
    assert (moved[0]["diagnosis"], moved[0]["view"]) == ("atrial fibrillation", "summary")
    code, out, err = run_ked(
        capsys, *db, "kb", "drift", "AFIB", "--view", "summary",
        "--checkpoint", str(tiny_checkpoint), "--data", "sample", "--split", "val",
    )  # fmt: skip
    assert code == 0, err
    assert "zero-shot AUROC on sample (summary):" in out
    line = next(x for x in out.splitlines() if x.startswith("atrial fibrillation") and "v1 0." in x)
    aurocs = [float(part) for part in line.split() if part.startswith(("0.", "1."))]
    assert len(aurocs) == 2 and not np.isclose(*aurocs)
    code, _, err = run_ked(capsys, *db, "kb", "drift", "AFIB", "--all")
    assert code == 2 and "not both" in err
