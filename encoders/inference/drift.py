"""Drift after regenerating knowledge: how far each label's vectors moved, and what it did to
zero-shot.

For each diagnosis two knowledge versions (by default the one before the latest, and the
latest) are rendered in each view and embedded through the cache; the cosine between the old
and the new vector says how far the view moved (1.0: not at all). Given a checkpoint and an
evaluation set, each diagnosis is also scored zero-shot with the old and with the new vectors
(the checkpoint's own text encoder, plain text vectors, no rhythm prior), and the per-label
AUROC of both is reported side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from encoders.datasets import record_label_strings, target_labels
from encoders.ecg import Manifest
from encoders.evaluation.bootstrap import BootstrapSettings
from encoders.evaluation.metrics import evaluate
from encoders.inference.evaluate import evaluation_dataset
from encoders.inference.zeroshot import LabelVectors, ZeroShotClassifier
from encoders.text import Embedder, label_entries
from kb_store.store import KnowledgeBase, StoredKnowledge
from knowledge.views import check_view, render_view

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionPair:
    """The two knowledge versions of one diagnosis that are compared."""

    old: StoredKnowledge
    new: StoredKnowledge

    @property
    def name(self) -> str:
        return self.new.diagnosis.name


@dataclass(frozen=True)
class ViewDrift:
    """How far one view of one diagnosis moved between two versions."""

    diagnosis: str
    view: str
    old_version: int
    new_version: int
    cosine: float
    text_changed: bool


@dataclass(frozen=True)
class AurocDrift:
    """Per-label zero-shot AUROC with the old and the new version's vectors."""

    diagnosis: str
    old_version: int
    new_version: int
    positives: int
    negatives: int
    old_auroc: float | None
    new_auroc: float | None

    @property
    def change(self) -> float | None:
        if self.old_auroc is None or self.new_auroc is None:
            return None
        return self.new_auroc - self.old_auroc


def version_pairs(
    kb: KnowledgeBase,
    names: Sequence[str] = (),
    *,
    from_version: int | None = None,
    to_version: int | None = None,
) -> list[VersionPair]:
    """The versions to compare for the named diagnoses (every diagnosis with two versions
    when no names are given): ``to_version`` (default the latest) against ``from_version``
    (default the one before it)."""
    if names:
        ids = [kb.named(name).id for name in names]
    else:
        ids = [d.id for d, version, _ in kb.diagnoses() if version and version > 1]
    return [VersionPair(*kb.versions_to_compare(i, from_version, to_version)) for i in ids]


def vector_drift(
    embedder: Embedder, pairs: Sequence[VersionPair], views: Sequence[str]
) -> list[ViewDrift]:
    """Cosine between old and new vectors per diagnosis and view, the most moved first."""
    for view in views:
        check_view(view)
    keys = [(pair, view) for pair in pairs for view in views]
    old = [render_view(pair.old.record, view) for pair, view in keys]
    new = [render_view(pair.new.record, view) for pair, view in keys]
    vectors, _ = embedder.embed(old + new)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    cosines = np.sum(vectors[: len(keys)] * vectors[len(keys) :], axis=1)
    drift = [
        ViewDrift(
            pair.name,
            view,
            pair.old.version,
            pair.new.version,
            float(cosine),
            old_text != new_text,
        )
        for (pair, view), cosine, old_text, new_text in zip(keys, cosines, old, new, strict=True)
    ]
    return sorted(drift, key=lambda d: (d.cosine, d.diagnosis, d.view))


def auroc_drift(
    classifier: ZeroShotClassifier,
    manifest: Manifest,
    pairs: Sequence[VersionPair],
    views: Sequence[str],
    split: str | None = None,
) -> list[AurocDrift]:
    """Per-label zero-shot AUROC on ``split`` (default ``test``, else ``val``, else every
    record) with the old and with the new vectors, largest change first."""
    names = [pair.name for pair in pairs]
    entries = label_entries(classifier.kb, labels=names)
    mapping = target_labels(classifier.kb, entries, record_label_strings(manifest))
    splits = set(manifest.table["split"])
    chosen = split or next((s for s in ("test", "val") if s in splits), "all")
    data = evaluation_dataset(manifest, chosen, names, mapping, classifier.checkpoint)
    log.info("zero-shot drift on %d %s records", len(data), chosen)
    results = {}
    for side in ("old", "new"):
        records = [getattr(pair, side).record for pair in pairs]
        per_view = {
            view: torch.from_numpy(
                np.asarray(
                    classifier.embedder.embed([render_view(r, view) for r in records])[0],
                    dtype=np.float32,
                )
            )
            for view in views
        }
        vectors = LabelVectors(entries, list(views), per_view, [], list(records))
        scores = classifier.scores(data, vectors)
        results[side] = evaluate(
            scores, data.targets, names, bootstrap=BootstrapSettings(resamples=0)
        )
    rows = [
        AurocDrift(
            pair.name,
            pair.old.version,
            pair.new.version,
            results["new"].labels[i].positives,
            results["new"].labels[i].negatives,
            results["old"].labels[i].auroc.value,
            results["new"].labels[i].auroc.value,
        )
        for i, pair in enumerate(pairs)
    ]
    return sorted(rows, key=lambda r: -abs(r.change) if r.change is not None else 0.0)
