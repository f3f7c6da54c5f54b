"""Name normalisation shared by validation and the knowledge base's name matching."""

from __future__ import annotations

import re
import unicodedata

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_name(name: str) -> str:
    """Case-, whitespace- and punctuation-insensitive key for a diagnosis name or code.

    ``"Atrial  fibrillation."``, ``"atrial-fibrillation"`` and ``"ATRIAL FIBRILLATION"`` share
    the key ``"atrial fibrillation"``.
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return _NON_ALNUM.sub(" ", text).strip()
