"""Benchmark: report texts embedded once per distinct text (through the cache) vs every report.

Corpus: ``--reports`` machine reports in MIMIC-IV-ECG's style, drawn with a fixed seed from
realistic statement combinations (a rhythm, up to three findings, an overall statement, now and
then a non-diagnostic note) and turned into report texts the way the MIMIC-IV-ECG reader does
(`encoders.ecg.readers.mimic_iv_ecg.report_text`). Measured side by side in one run:
(1) loading all-MiniLM-L6-v2 and calling ``SentenceTransformer.encode`` on every report, as a
training loop that embeds its batch's reports would; (2) `encoders.text.reports.embed_reports`
with an empty cache (fingerprint, model load, distinct texts encoded and committed); (3) the same
again with the cache warm. Also: distinct texts / reports, and the share of statements that map
to mimiciv-ked labels.

    python bench/report_embedding.py [--reports 5000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from encoders.ecg.readers.mimic_iv_ecg import report_text
from encoders.text import Embedder, EncoderSpec
from encoders.text.reports import embed_reports
from kb_store.store import KnowledgeBase
from knowledge.statements import mimiciv_statement_mapper

RHYTHMS = {
    "Sinus rhythm": 50,
    "Sinus tachycardia": 12,
    "Sinus bradycardia": 10,
    "Atrial fibrillation": 5,
    "Atrial fibrillation with rapid ventricular response": 3,
    "Atrial fibrillation with slow ventricular response": 1,
    "Atrial flutter": 1,
    "Sinus arrhythmia": 3,
    "Sinus rhythm with PACs": 3,
    "Sinus rhythm with PVCs": 3,
    "Sinus rhythm with 1st degree A-V block": 3,
    "Marked sinus bradycardia": 1,
    "Ectopic atrial rhythm": 1,
    "Pacemaker rhythm - no further analysis": 1,
}
FINDINGS = {
    "Left axis deviation": 8,
    "Right axis deviation": 2,
    "Leftward axis": 3,
    "RBBB": 4,
    "Left bundle branch block": 2,
    "Incomplete right bundle branch block": 2,
    "Left anterior fascicular block": 3,
    "Nonspecific intraventricular conduction delay": 2,
    "Left ventricular hypertrophy": 3,
    "Minimal voltage criteria for LVH, may be normal variant": 2,
    "Left atrial abnormality": 2,
    "Possible left atrial abnormality": 1,
    "Low QRS voltages in precordial leads": 2,
    "Low voltage, extremity and precordial leads": 1,
    "Poor R wave progression - probable normal variant": 2,
    "Possible anterior infarct - age undetermined": 2,
    "Inferior infarct - age undetermined": 3,
    "Septal infarct - age undetermined": 2,
    "Inferior infarct, probably old": 1,
    "Anterolateral ST-T changes may be due to myocardial ischemia": 1,
    "Inferior/lateral ST-T changes may be due to myocardial ischemia": 2,
    "Lateral ST-T changes may be due to myocardial ischemia": 2,
    "Lateral T wave changes are nonspecific": 3,
    "Inferior T wave changes are nonspecific": 2,
    "Septal T wave changes are nonspecific": 1,
    "Nonspecific T wave abnormality": 4,
    "Prolonged QT interval": 4,
    "ST elevation, consider early repolarization": 1,
    "Atrial premature complex": 2,
    "Ventricular premature complex": 2,
    "Frequent PVCs": 1,
    "Short PR interval": 1,
    "Abnormal R wave progression, early transition": 1,
    "Ventricular pacing": 1,
}
OVERALL = {"Normal ECG": 30, "Borderline ECG": 25, "Abnormal ECG": 40, "Otherwise normal ECG": 5}
NOTES = {"--- Pediatric criteria used ---": 1, "Warning: Data quality may affect interpretation": 2}


def _draw(rng: np.random.Generator, weights: dict[str, int], size: int = 1) -> list[str]:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return list(rng.choice(names, size=size, replace=False, p=p / p.sum()))


def mimic_style_reports(count: int, seed: int = 0) -> list[list[str]]:
    """``count`` reports, each a list of statements as in MIMIC's report_0 ... report_17."""
    rng = np.random.default_rng(seed)
    reports = []
    for _ in range(count):
        statements = _draw(rng, RHYTHMS)
        findings = int(rng.choice([0, 1, 2, 3], p=[0.45, 0.3, 0.17, 0.08]))
        statements += _draw(rng, FINDINGS, findings)
        statements += _draw(rng, OVERALL) if findings else ["Normal ECG"]
        if rng.random() < 0.05:
            statements.insert(0, _draw(rng, NOTES)[0])
        reports.append(statements)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    mapper = mimiciv_statement_mapper()
    statements = mimic_style_reports(args.reports)
    matches = [mapper.match_all(report) for report in statements]
    texts = [report_text(found) for found in matches]
    flat = [m for found in matches for m in found if m.diagnostic]
    mapped = sum(1 for m in flat if m.labels and not m.unmatched)
    partly = sum(1 for m in flat if m.labels and m.unmatched)
    distinct_statements = {m.statement for m in flat}
    print(
        f"{len(texts)} MIMIC-style reports, {len(set(texts))} distinct texts "
        f"(distinct/total {len(set(texts)) / len(texts):.3f}); {len(flat)} diagnostic statements "
        f"({len(distinct_statements)} distinct): {mapped / len(flat):.1%} map fully to "
        f"mimiciv-ked labels, {partly / len(flat):.1%} partly, "
        f"{(len(flat) - mapped - partly) / len(flat):.1%} not at all"
    )

    started = time.perf_counter()
    model = SentenceTransformer(str(EncoderSpec().model_path()), device="cpu")
    loaded = time.perf_counter()
    every = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    naive_s = time.perf_counter() - started
    print(
        f"every report:    {naive_s:6.2f} s (model load {loaded - started:.2f} s, "
        f"{len(texts)} texts encoded in {naive_s - (loaded - started):.2f} s)"
    )
    del model

    with tempfile.TemporaryDirectory() as tmp, KnowledgeBase(Path(tmp) / "bench.duckdb") as kb:
        started = time.perf_counter()
        cold = embed_reports(Embedder(kb, EncoderSpec(), batch_size=args.batch_size), texts)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = embed_reports(Embedder(kb, EncoderSpec(), batch_size=args.batch_size), texts)
        warm_s = time.perf_counter() - started
    print(
        f"distinct, cold:  {cold_s:6.2f} s ({cold.summary.embedded} texts embedded and cached, "
        f"model loaded: {cold.summary.model_loaded})"
    )
    print(
        f"distinct, warm:  {warm_s:6.2f} s ({warm.summary.cache_hits} from the cache, "
        f"model loaded: {warm.summary.model_loaded})"
    )
    agreement = float(np.min(np.sum(cold.vectors[cold.ids] * every, axis=1)))
    print(f"lowest cosine between the two ways' vectors of a report: {agreement:.6f}")
    print(
        f"speed-up: cold {naive_s / cold_s:.1f}x, warm {naive_s / warm_s:.0f}x "
        f"against embedding every report"
    )


if __name__ == "__main__":
    main()
