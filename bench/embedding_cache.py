"""Benchmark: the embedding job against a bare ``model.encode`` of the same texts.

Texts: every view of every record of the curated pack. Measured side by side in one run:
(1) the cold job (resolve labels, render views, fingerprint, cache lookup, model load,
encode, commit) vs loading the model and calling ``SentenceTransformer.encode`` directly on
the same texts; (2) a warm rerun of the job vs the cold job.

    python bench/embedding_cache.py [--batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from sentence_transformers import SentenceTransformer

from encoders.text import Embedder, EmbedSummary, EncoderSpec, label_entries, view_texts
from kb_store.store import KnowledgeBase
from knowledge.curated import import_pack
from knowledge.views import VIEWS


def job(kb: KnowledgeBase, batch_size: int) -> tuple[float, EmbedSummary]:
    """What ``ked embed`` does: resolve labels, render views, embed what is missing."""
    started = time.perf_counter()
    entries = label_entries(kb, labels=[d.name for d, _, _ in kb.diagnoses()])
    by_view = view_texts(kb, entries, list(VIEWS))
    texts = [t for view in VIEWS for t in by_view[view]]
    _, summary = Embedder(kb, EncoderSpec(), batch_size=batch_size).embed(texts)
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        with KnowledgeBase(db) as kb:
            import_pack(kb)
            entries = label_entries(kb, labels=[d.name for d, _, _ in kb.diagnoses()])
            by_view = view_texts(kb, entries, list(VIEWS))
        texts = [t for view in VIEWS for t in by_view[view]]
        print(
            f"{len(texts)} texts ({len(set(texts))} distinct), {len(entries)} diagnoses x "
            f"{len(VIEWS)} views"
        )

        started = time.perf_counter()
        model = SentenceTransformer(str(EncoderSpec().model_path()), device="cpu")
        loaded = time.perf_counter()
        model.encode(sorted(set(texts)), batch_size=args.batch_size, normalize_embeddings=True)
        bare_encode = time.perf_counter() - loaded
        bare = time.perf_counter() - started
        del model

        with KnowledgeBase(db) as kb:
            cold_s, cold = job(kb, args.batch_size)
            warm_s, warm = job(kb, args.batch_size)

    print(f"bare load + encode: {bare:8.3f} s (encode {bare_encode:.3f} s)")
    print(f"cold job:           {cold_s:8.3f} s ({cold.embedded} embedded)")
    print(
        f"warm rerun:         {warm_s:8.3f} s ({warm.cache_hits} cache hits, model loaded: "
        f"{warm.model_loaded})"
    )
    print(f"cold job / bare:    {cold_s / bare:8.3f}  (overhead {100 * (cold_s / bare - 1):+.1f}%)")
    print(f"cold / warm:        {cold_s / warm_s:8.1f}x")


if __name__ == "__main__":
    main()
