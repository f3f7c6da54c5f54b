"""Name normalisation shared by validation and the knowledge base's name matching."""

from __future__ import annotations

import unicodedata

# Letters, marks (vowel signs of Indic scripts, combining accents) and digits of every script.
_KEPT_CATEGORIES = frozenset("LMN")


def normalize_name(name: str) -> str:
    """Case-, width-, whitespace- and punctuation-insensitive key for a diagnosis name or code.

    Unicode-aware: NFKC, then casefold; letters, marks and digits of every script are kept,
    everything else separates words. ``"Atrial  fibrillation."``, ``"atrial-fibrillation"``
    and ``"ATRIAL FIBRILLATION"`` share the key ``"atrial fibrillation"``; ``"Ünïcødé"`` is
    ``"ünïcødé"`` and ``"心衰"`` stays ``"心衰"``, so labels in other scripts never collide.
    """
    text = unicodedata.normalize("NFKC", name).casefold()
    kept = "".join(c if unicodedata.category(c)[0] in _KEPT_CATEGORIES else " " for c in text)
    return " ".join(kept.split())
