"""The 12 standard ECG leads and the anatomical territories they look at."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF",
    "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip

_LEAD_BY_KEY = {lead.lower(): lead for lead in STANDARD_LEADS}


def canonical_lead(name: str) -> str:
    """Return the canonical spelling of a standard lead name given in any case.

    Raises ``ValueError`` naming the lead when it is not one of the 12 standard leads.
    """
    key = name.strip().lower()
    if key not in _LEAD_BY_KEY:
        raise ValueError(f"unknown lead {name!r}; expected one of {', '.join(STANDARD_LEADS)}")
    return _LEAD_BY_KEY[key]


def sort_leads(leads: Iterable[str]) -> list[str]:
    """Deduplicate canonical leads and put them in standard order (I ... V6)."""
    return sorted(set(leads), key=STANDARD_LEADS.index)


class Territory(StrEnum):
    """Anatomical territories named in ECG statements."""

    INFERIOR = "inferior"
    LATERAL = "lateral"
    HIGH_LATERAL = "high lateral"
    LOW_LATERAL = "low lateral"
    SEPTAL = "septal"
    ANTERIOR = "anterior"
    ANTEROSEPTAL = "anteroseptal"
    ANTEROLATERAL = "anterolateral"
    EXTENSIVE_ANTERIOR = "extensive anterior"
    INFEROLATERAL = "inferolateral"
    POSTERIOR = "posterior"
    RIGHT_VENTRICULAR = "right ventricular"
    DIFFUSE = "diffuse"


_V1_TO_V6 = {"V1", "V2", "V3", "V4", "V5", "V6"}

# Leads that may show a territory's changes. Posterior changes appear in the standard 12 leads
# only as reciprocal changes in V1-V3; right ventricular involvement shows in V1 (and the
# inferior leads it usually accompanies).
TERRITORY_LEADS: dict[Territory, frozenset[str]] = {
    Territory.INFERIOR: frozenset({"II", "III", "aVF"}),
    Territory.LATERAL: frozenset({"I", "aVL", "V5", "V6"}),
    Territory.HIGH_LATERAL: frozenset({"I", "aVL"}),
    Territory.LOW_LATERAL: frozenset({"V5", "V6"}),
    Territory.SEPTAL: frozenset({"V1", "V2"}),
    Territory.ANTERIOR: frozenset({"V2", "V3", "V4"}),
    Territory.ANTEROSEPTAL: frozenset({"V1", "V2", "V3", "V4"}),
    Territory.ANTEROLATERAL: frozenset({"I", "aVL", "V3", "V4", "V5", "V6"}),
    Territory.EXTENSIVE_ANTERIOR: frozenset({"I", "aVL"} | _V1_TO_V6),
    Territory.INFEROLATERAL: frozenset({"II", "III", "aVF", "I", "aVL", "V5", "V6"}),
    Territory.POSTERIOR: frozenset({"V1", "V2", "V3"}),
    Territory.RIGHT_VENTRICULAR: frozenset({"V1", "II", "III", "aVF"}),
    Territory.DIFFUSE: frozenset(STANDARD_LEADS),
}

# Words in a diagnosis name that name a territory, longest first so that "anterolateral"
# is matched before "anterior" and "lateral".
TERRITORY_WORDS: tuple[tuple[str, Territory], ...] = (
    ("inferoposterolateral", Territory.INFEROLATERAL),
    ("inferoposterior", Territory.INFERIOR),
    ("inferolateral", Territory.INFEROLATERAL),
    ("anterolateral", Territory.ANTEROLATERAL),
    ("anteroseptal", Territory.ANTEROSEPTAL),
    ("inferior", Territory.INFERIOR),
    ("anterior", Territory.ANTERIOR),
    ("lateral", Territory.LATERAL),
    ("septal", Territory.SEPTAL),
    ("posterior", Territory.POSTERIOR),
)
