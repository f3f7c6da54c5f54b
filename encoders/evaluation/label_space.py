"""Label-space diagnostics: which labels the text side can tell apart.

A zero-shot model scores an ECG against each label vector, so two labels whose vectors nearly
coincide get nearly the same score whatever the ECG encoder learns. This module measures that
on a label-vector matrix (C, D): the cosine similarity matrix, the most confusable pairs, each
label's nearest neighbour (flagged when closer than a threshold), a clustered heatmap, and a
comparison of views (e.g. bare names against knowledge views).

Absolute cosines are not comparable across views (long texts built from one template share
much wording), so the comparison also gives each pair's rank among all pairs of its view
(1 = the most similar pair).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# scipy, matplotlib and the text side load where used: the command line reads the threshold.
if TYPE_CHECKING:
    from encoders.text.labels import LabelMatrix

DEFAULT_THRESHOLD = 0.95


def cosine_similarity(vectors: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """(C, C) cosine similarities of the rows of ``vectors``."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"label vectors must be (labels, dim), got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1)
    if (norms == 0).any():
        zero = int(np.flatnonzero(norms == 0)[0])
        name = names[zero] if names is not None else f"row {zero}"
        raise ValueError(f"label vector of {name!r} is all zeros: no direction to compare")
    unit = vectors / norms[:, None]
    return np.clip(unit @ unit.T, -1.0, 1.0)


@dataclass(frozen=True)
class LabelPair:
    """Two labels and the cosine of their vectors."""

    first: str
    second: str
    cosine: float
    same_diagnosis: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "cosine": self.cosine,
            "same_diagnosis": self.same_diagnosis,
        }


@dataclass(frozen=True)
class ViewStats:
    """Summary of one view's label space."""

    view: str
    mean_cosine: float
    max_cosine: float
    pairs_above: int
    labels_flagged: int
    reference_pairs_separated: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelSpace:
    """Label vectors of one view, with their similarity structure.

    ``diagnoses`` (optional, aligned with ``names``) marks labels that resolve to the same
    diagnosis: their vectors are identical in every view, which no knowledge text can change.
    """

    names: list[str]
    vectors: np.ndarray
    view: str = ""
    diagnoses: list[str | None] | None = None
    similarity: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError(f"a label space needs at least two labels, got {len(self.names)}")
        if len(self.names) != len(self.vectors):
            raise ValueError(f"{len(self.names)} names for {len(self.vectors)} label vectors")
        if len(set(self.names)) != len(self.names):
            raise ValueError("label names are not unique")
        if self.diagnoses is not None and len(self.diagnoses) != len(self.names):
            raise ValueError(f"{len(self.diagnoses)} diagnoses for {len(self.names)} labels")
        self.similarity = cosine_similarity(self.vectors, self.names)

    @classmethod
    def from_matrix(cls, matrix: LabelMatrix, view: str | None = None) -> LabelSpace:
        """The space of a ``LabelMatrix`` (labels in its order; view named by its views)."""
        return cls(
            [e.label for e in matrix.entries],
            matrix.vectors,
            view or "+".join(matrix.views),
            [e.diagnosis for e in matrix.entries],
        )

    def _same(self, i: int, j: int) -> bool:
        if self.diagnoses is None or self.diagnoses[i] is None:
            return False
        return self.diagnoses[i] == self.diagnoses[j]

    @cached_property
    def _pair_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Upper-triangle index pairs (i < j), most similar first."""
        first, second = np.triu_indices(len(self.names), k=1)
        order = np.argsort(-self.similarity[first, second], kind="stable")
        return first[order], second[order]

    def pairs(self, top: int | None = None) -> list[LabelPair]:
        """Label pairs by decreasing cosine (all, or the ``top`` most confusable)."""
        first, second = self._pair_order
        return [
            LabelPair(self.names[i], self.names[j], float(self.similarity[i, j]), self._same(i, j))
            for i, j in zip(first[:top], second[:top], strict=True)
        ]

    @cached_property
    def _ranks(self) -> np.ndarray:
        first, second = self._pair_order
        ranks = np.zeros(self.similarity.shape, dtype=np.int64)
        ranks[first, second] = ranks[second, first] = np.arange(1, first.size + 1)
        return ranks

    def rank(self, first: str, second: str) -> int:
        """The pair's rank among all pairs of this view (1 = most similar)."""
        return int(self._ranks[self.names.index(first), self.names.index(second)])

    def cosine(self, first: str, second: str) -> float:
        return float(self.similarity[self.names.index(first), self.names.index(second)])

    def nearest(self) -> list[LabelPair]:
        """Each label (``first``) with its nearest other label (``second``)."""
        masked = self.similarity - 3.0 * np.eye(len(self.names))
        nearest = masked.argmax(axis=1)
        return [
            LabelPair(name, self.names[j], float(self.similarity[i, j]), self._same(i, j))
            for i, (name, j) in enumerate(zip(self.names, nearest, strict=True))
        ]

    def flags(self, threshold: float = DEFAULT_THRESHOLD) -> dict[str, str]:
        """Label -> note, for labels whose nearest neighbour is at cosine >= ``threshold``.

        The notes fit ``report.write_report(flags=...)``.
        """
        return {
            pair.first: f"nearest label {pair.second!r} at cosine {pair.cosine:.3f}"
            + (" (same diagnosis)" if pair.same_diagnosis else "")
            + (f" in the {self.view} view" if self.view else "")
            for pair in self.nearest()
            if pair.cosine >= threshold
        }

    def stats(self, threshold: float = DEFAULT_THRESHOLD) -> ViewStats:
        """Mean and max off-diagonal cosine, pairs and labels at or above ``threshold``."""
        first, second = np.triu_indices(len(self.names), k=1)
        values = self.similarity[first, second]
        return ViewStats(
            self.view,
            float(values.mean()),
            float(values.max()),
            int((values >= threshold).sum()),
            len(self.flags(threshold)),
        )

    def cluster_order(self) -> list[int]:
        """Label indices ordered so that similar labels are adjacent (average linkage)."""
        if len(self.names) < 3:
            return list(range(len(self.names)))
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        distance = np.clip(1.0 - self.similarity, 0.0, 2.0)
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(distance, checks=False), "average", optimal_ordering=True)
        return [int(i) for i in leaves_list(tree)]

    def write_heatmap(self, path: Path, order: Sequence[int] | None = None) -> Path:
        """A heatmap PNG of the similarity matrix (clustered order unless one is given)."""
        from encoders.evaluation.plots import plot_similarity_heatmap

        index = list(order) if order is not None else self.cluster_order()
        return plot_similarity_heatmap(
            path,
            self.similarity[np.ix_(index, index)],
            [self.names[i] for i in index],
            title=f"Label cosine similarity ({self.view or 'label vectors'})",
        )

    def to_dict(self, top: int = 20, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
        return {
            "view": self.view,
            "labels": self.names,
            "stats": self.stats(threshold).to_dict(),
            "threshold": threshold,
            "confusable_pairs": [p.to_dict() for p in self.pairs(top)],
            "nearest": [p.to_dict() for p in self.nearest()],
            "flags": self.flags(threshold),
        }


@dataclass(frozen=True)
class PairAcrossViews:
    """A pair confusable in the reference view, with its cosine and rank in every view."""

    first: str
    second: str
    same_diagnosis: bool
    cosine: dict[str, float]
    rank: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ViewComparison:
    """Views of the same labels side by side, and what happens to the reference's close pairs."""

    reference: str
    threshold: float
    stats: list[ViewStats]
    pairs: list[PairAcrossViews]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "threshold": self.threshold,
            "stats": [s.to_dict() for s in self.stats],
            "reference_pairs": [p.to_dict() for p in self.pairs],
        }


def compare_views(
    spaces: Mapping[str, LabelSpace],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    reference: str | None = None,
) -> ViewComparison:
    """Compare views: per-view statistics, and the pairs at or above ``threshold`` in the
    reference view (default: the first) with their cosine and rank in each view.

    ``reference_pairs_separated`` counts, for each other view, the reference pairs whose
    cosine falls below ``threshold`` there.
    """
    if not spaces:
        raise ValueError("give at least one view to compare")
    reference = reference or next(iter(spaces))
    if reference not in spaces:
        raise KeyError(f"reference view {reference!r} is not among {', '.join(spaces)}")
    base = spaces[reference]
    for view, space in spaces.items():
        if space.names != base.names:
            raise ValueError(f"view {view!r} has other labels than {reference!r}")
    close = [p for p in base.pairs() if p.cosine >= threshold]
    pairs = [
        PairAcrossViews(
            p.first,
            p.second,
            p.same_diagnosis,
            {view: space.cosine(p.first, p.second) for view, space in spaces.items()},
            {view: space.rank(p.first, p.second) for view, space in spaces.items()},
        )
        for p in close
    ]
    stats = []
    for view, space in spaces.items():
        s = space.stats(threshold)
        separated = None
        if view != reference:
            separated = sum(1 for p in pairs if p.cosine[view] < threshold)
        stats.append(
            ViewStats(view, s.mean_cosine, s.max_cosine, s.pairs_above, s.labels_flagged, separated)
        )
    return ViewComparison(reference, threshold, stats, pairs)
