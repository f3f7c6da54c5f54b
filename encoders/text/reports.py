"""Report texts as vectors: each distinct text of a dataset embedded once, through the cache.

Machine reports repeat heavily (thousands of records read just "Sinus rhythm. Normal ECG."), so
only the distinct texts go to the text encoder, and only those missing from the
content-addressed cache (`kb_store.embeddings`): a rerun embeds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from encoders.text.embed import Embedder, EmbedSummary, Progress

log = logging.getLogger(__name__)


@dataclass
class ReportVectors:
    """The distinct report texts, their vectors, and each record's position among them."""

    texts: list[str]
    vectors: np.ndarray  # (distinct, dim)
    ids: np.ndarray  # (records,) int64: row of ``vectors``, -1 for a record without a report
    summary: EmbedSummary

    @property
    def total(self) -> int:
        """Records with a report."""
        return int((self.ids >= 0).sum())

    @property
    def distinct(self) -> int:
        return len(self.texts)

    @property
    def ratio(self) -> float:
        """Distinct texts per report (1.0: no repetition)."""
        return self.distinct / self.total if self.total else 0.0


def embed_reports(
    embedder: Embedder, reports: Sequence[str | None], progress: Progress | None = None
) -> ReportVectors:
    """Vectors of the records' ``reports`` (None or blank: no report), each text embedded once."""
    texts = [text.strip() if text else "" for text in reports]
    distinct = list(dict.fromkeys(text for text in texts if text))
    position = {text: row for row, text in enumerate(distinct)}
    ids = np.array([position.get(text, -1) for text in texts], dtype=np.int64)
    vectors, summary = embedder.embed(distinct, progress)
    result = ReportVectors(distinct, vectors, ids, summary)
    log.info(
        "%d reports, %d distinct texts (ratio %.3f): %d embedded, %d from the cache",
        result.total,
        result.distinct,
        result.ratio,
        summary.embedded,
        summary.cache_hits,
    )
    return result
