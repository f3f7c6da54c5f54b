"""Label vectors: labels -> diagnoses -> view texts -> cached vectors, in a fixed order.

This is how training and zero-shot code get label vectors; the text encoder only runs for
texts missing from the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.text.embed import Embedder, EmbedSummary, Progress
from kb_store.embeddings import text_sha256
from kb_store.store import KnowledgeBase
from ked.errors import UserError
from knowledge.views import check_view, render_view, view_template_sha256
from knowledge.vocab import load_vocabulary

if TYPE_CHECKING:  # torch loads only for training code's tensor(): cached runs never need it
    import torch

log = logging.getLogger(__name__)


class MissingKnowledgeError(UserError, LookupError):
    """Labels that resolve to no diagnosis, or to one without knowledge."""


class NotEmbeddedError(UserError, LookupError):
    """Texts missing from the cache when embedding was not allowed."""


@dataclass(frozen=True)
class LabelEntry:
    label: str
    query: str
    code: str | None
    diagnosis_id: int | None
    diagnosis: str | None


def label_entries(
    kb: KnowledgeBase, *, vocab: str | None = None, labels: Sequence[str] = ()
) -> list[LabelEntry]:
    """The labels of a vocabulary (in its order) or the given labels, resolved."""
    if vocab is not None:
        triples = [(v.label, v.query, v.code) for v in load_vocabulary(vocab).labels]
    else:
        triples = [(label, label, None) for label in labels]
    resolved = kb.resolve_many([query for _, query, _ in triples])
    entries = []
    for label, query, code in triples:
        diagnosis = resolved[query]
        entries.append(
            LabelEntry(
                label=label,
                query=query,
                code=code,
                diagnosis_id=diagnosis.id if diagnosis else None,
                diagnosis=diagnosis.name if diagnosis else None,
            )
        )
    return entries


def view_texts(
    kb: KnowledgeBase,
    entries: Sequence[LabelEntry],
    views: Sequence[str],
    *,
    fallback_to_name: bool = False,
) -> dict[str, list[str]]:
    """The text of each view for each label, from the labels' usable knowledge.

    Usable knowledge is the latest version whose review status the knowledge base uses
    (:meth:`KnowledgeBase.usable`). A label without it is an error, or with
    ``fallback_to_name`` its own text (the bare name), with a warning.
    """
    for view in views:
        check_view(view)
    records = kb.usable_many(e.diagnosis_id for e in entries if e.diagnosis_id is not None)
    missing = [e.label for e in entries if e.diagnosis_id not in records]
    if missing and not fallback_to_name:
        raise MissingKnowledgeError(
            f"no {'/'.join(kb.usable_statuses)} knowledge for {len(missing)} labels: "
            + ", ".join(missing[:20])
            + (" ..." if len(missing) > 20 else "")
            + "; import the curated pack or generate knowledge first, accept proposed "
            "knowledge ('ked kb review'), or opt in with --use-knowledge accepted,proposed"
        )
    if missing:
        log.warning(
            "no %s knowledge for %d labels, using the bare label text instead of the views %s: %s",
            "/".join(kb.usable_statuses),
            len(missing),
            ", ".join(views),
            ", ".join(missing),
        )
    return {
        view: [
            render_view(records[e.diagnosis_id].record, view)
            if e.diagnosis_id in records
            else e.label
            for e in entries
        ]
        for view in views
    }


@dataclass
class LabelMatrix:
    """One vector per label, in label order, with everything needed to reproduce it."""

    entries: list[LabelEntry]
    views: list[str]
    vectors: np.ndarray
    texts: dict[str, list[str]]
    fingerprint: str
    encoder: dict[str, Any]
    summaries: list[EmbedSummary] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def tensor(self) -> torch.Tensor:
        """The (labels, dim) matrix as a float32 tensor, for training code."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.vectors, dtype=np.float32))

    def sidecar(self) -> dict[str, Any]:
        """Metadata of the matrix: ordered labels, codes, diagnoses, views, encoder."""
        return {
            "labels": [e.label for e in self.entries],
            "codes": [e.code for e in self.entries],
            "queries": [e.query for e in self.entries],
            "diagnosis_ids": [e.diagnosis_id for e in self.entries],
            "diagnoses": [e.diagnosis for e in self.entries],
            "views": self.views,
            "view_templates_sha256": {v: view_template_sha256(v) for v in self.views},
            "text_sha256": {v: [text_sha256(t) for t in ts] for v, ts in self.texts.items()},
            "encoder_fingerprint": self.fingerprint,
            "encoder": self.encoder,
            "dim": self.dim,
            "count": len(self.entries),
            "combine": "mean of per-view vectors, renormalised" if len(self.views) > 1 else None,
        }


def label_matrix(
    embedder: Embedder,
    entries: Sequence[LabelEntry],
    views: Sequence[str],
    *,
    embed_missing: bool = True,
    fallback_to_name: bool = False,
    progress: Progress | None = None,
) -> LabelMatrix:
    """Vectors for ``entries``; several views are averaged per label and renormalised."""
    if not views:
        raise ValueError("give at least one view")
    texts = view_texts(embedder.kb, entries, views, fallback_to_name=fallback_to_name)
    if not embed_missing:
        _require_cached(embedder, [t for ts in texts.values() for t in ts])
    per_view, summaries = [], []
    for view in views:
        vectors, summary = embedder.embed(texts[view], progress)
        per_view.append(vectors)
        summaries.append(summary)
    combined = np.mean(per_view, axis=0) if len(per_view) > 1 else per_view[0]
    if len(per_view) > 1 and embedder.spec.normalize:
        combined = combined / np.linalg.norm(combined, axis=1, keepdims=True).clip(min=1e-12)
    return LabelMatrix(
        entries=list(entries),
        views=list(views),
        vectors=combined.astype(np.float32),
        texts=texts,
        fingerprint=embedder.fingerprint,
        encoder=embedder.description,
        summaries=summaries,
    )


def _require_cached(embedder: Embedder, texts: Sequence[str]) -> None:
    hashes = sorted({text_sha256(t) for t in texts})
    found = embedder.cache.lookup(hashes, embedder.fingerprint)
    missing = len(hashes) - len(found.vectors)
    if missing:
        raise NotEmbeddedError(
            f"{missing} of {len(hashes)} label texts are not in the cache for encoder "
            f"{embedder.fingerprint[:12]}; run 'ked embed' first, or export without --no-embed"
        )
