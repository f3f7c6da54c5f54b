"""Explain one recording's score for one diagnosis with a trained checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from encoders.datasets import evaluation_preprocessing
from encoders.ecg import ECGRecord
from encoders.ecg.rhythm import measure_prepared
from encoders.explain import Explanation, explain
from encoders.inference.criteria import describe_criteria
from encoders.inference.zeroshot import ZeroShotClassifier


def explain_recording(
    classifier: ZeroShotClassifier,
    record: ECGRecord,
    label: str,
    *,
    views: Sequence[str] = ("full",),
) -> tuple[Explanation, np.ndarray]:
    """The explanation of ``label`` for ``record``, and the preprocessed window it explains."""
    label_vectors = classifier.label_vectors(labels=[label], views=views)
    vectors = label_vectors.combined().to(classifier.device)
    preprocessing = evaluation_preprocessing(classifier.checkpoint.preprocessing)
    prepared = preprocessing.prepare(record)
    window = preprocessing.window(prepared)
    model = classifier.model

    def score_fn(x: torch.Tensor) -> torch.Tensor:
        return model(x, vectors).logits

    entry = label_vectors.entries[0]
    knowledge = classifier.kb.usable(entry.diagnosis_id) if entry.diagnosis_id else None
    fs = classifier.checkpoint.preprocessing.fs
    explanation = explain(
        score_fn,
        torch.from_numpy(window.x).to(classifier.device),
        0,
        entry.diagnosis or label,
        record=knowledge.record if knowledge else None,
        fs=fs,
        lead_mask=window.lead_mask,
    )
    if knowledge is not None:
        measured = measure_prepared(preprocessing, prepared, record.units, record.meta.get("sex"))
        described = describe_criteria(knowledge.record, measured)
        explanation = replace(explanation, measured_criteria=tuple(described))
    return explanation, window.x
