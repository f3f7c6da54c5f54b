"""The label space the report's heatmap shows, computed as ``ked labels similarity`` does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from encoders.evaluation.label_space import LabelSpace
from encoders.text import EncoderSpec
from kb_store.store import KnowledgeBase


def label_space(
    kb: KnowledgeBase,
    *,
    vocab: str | None = None,
    labels: Sequence[str] = (),
    view: str = "full",
    text: EncoderSpec | None = None,
    checkpoint: Path | None = None,
    device: str | None = None,
) -> LabelSpace:
    """Label vectors of one view (or views joined by ``+``, averaged) as a `LabelSpace`.

    With ``checkpoint``: the space that model scores in (its text encoder; vectors centred and
    adapted as it does), else the text encoder ``text``'s space. Texts missing from the cache
    are embedded; a label without knowledge is embedded by its bare name, with a warning.
    """
    views = view.split("+")
    if checkpoint is not None:
        from encoders.inference.zeroshot import ZeroShotClassifier
        from encoders.models.checkpoint import load_checkpoint

        classifier = ZeroShotClassifier(load_checkpoint(checkpoint), kb, device=device)
        vectors = classifier.label_vectors(vocab=vocab, labels=labels, views=views)
        return classifier.scoring_space(vectors)
    from encoders.text import Embedder, label_entries, label_matrix

    embedder = Embedder(kb, text or EncoderSpec(), device=device)
    entries = label_entries(kb, vocab=vocab, labels=labels)
    return LabelSpace.from_matrix(
        label_matrix(embedder, entries, views, fallback_to_name=True), view
    )
