"""Label spaces to inspect: label vectors of some views, as a text encoder or a model sees them.

``ked labels similarity`` prints and plots them; ``ked report`` draws one as a heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoders.evaluation.label_space import LabelSpace
from encoders.inference.zeroshot import ZeroShotClassifier
from encoders.models.checkpoint import load_checkpoint
from encoders.text import Embedder, EncoderSpec, LabelEntry, label_entries, label_matrix
from kb_store.store import KnowledgeBase
from ked.errors import UserError


@dataclass
class LabelSpaces:
    """One `LabelSpace` per view, the labels behind them and the text encoder that made them."""

    entries: list[LabelEntry]
    spaces: dict[str, LabelSpace]
    fingerprint: str
    encoder: dict[str, Any]


def label_spaces(
    kb: KnowledgeBase,
    views: Sequence[str],
    *,
    vocab: str | None = None,
    labels: Sequence[str] = (),
    text: EncoderSpec | None = None,
    checkpoint: Path | None = None,
    device: str | None = None,
    batch_size: int = 64,
    embed_missing: bool = True,
    fallback_to_name: bool = False,
) -> LabelSpaces:
    """The label vectors of each view (views joined by ``+`` are averaged).

    With ``checkpoint``: the space that model scores in (its text encoder; vectors centred,
    whitened and adapted as it does); else the space of the text encoder ``text``.
    """
    entries = label_entries(kb, vocab=vocab, labels=labels)
    if len(entries) < 2:
        raise UserError("compare at least two labels")
    if checkpoint is not None:
        classifier = ZeroShotClassifier(load_checkpoint(checkpoint), kb, device=device)
        spaces = {
            view: classifier.scoring_space(
                classifier.label_vectors(vocab=vocab, labels=labels, views=view.split("+"))
            )
            for view in views
        }
        embedder = classifier.embedder
    else:
        embedder = Embedder(kb, text or EncoderSpec(), device=device, batch_size=batch_size)
        spaces = {
            view: LabelSpace.from_matrix(
                label_matrix(
                    embedder,
                    entries,
                    view.split("+"),
                    embed_missing=embed_missing,
                    fallback_to_name=fallback_to_name,
                ),
                view,
            )
            for view in views
        }
    return LabelSpaces(entries, spaces, embedder.fingerprint, embedder.description)
