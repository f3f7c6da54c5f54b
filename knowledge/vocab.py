"""Label vocabularies: the ordered label sets of datasets and models, loaded by name.

Each label carries a *query*, the string the knowledge base resolves to a diagnosis:
``SCP:<code>`` for PTB-XL, ``SNOMED:<code>`` for CinC 2021, the label text for MIMIC-IV-ECG.
One diagnosis can serve several vocabularies ("AFIB", 164889003 and "atrial fibrillation").
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "vocab_data"


@dataclass(frozen=True)
class VocabLabel:
    label: str
    query: str
    code: str | None = None
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Vocabulary:
    name: str
    description: str
    labels: tuple[VocabLabel, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _ptbxl() -> Vocabulary:
    labels = []
    with open(DATA / "ptbxl_scp_statements.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = row[""]
            kinds = [k for k in ("diagnostic", "form", "rhythm") if row[k]]
            attributes = {
                "kind": "/".join(kinds),
                "diagnostic_class": row["diagnostic_class"],
                "diagnostic_subclass": row["diagnostic_subclass"],
            }
            labels.append(VocabLabel(code, f"SCP:{code}", code, row["description"], attributes))
    return Vocabulary("ptbxl", "PTB-XL: 71 SCP-ECG statements", tuple(labels))


def _cinc2021() -> Vocabulary:
    labels = []
    for file, scored in (("dx_mapping_scored.csv", "yes"), ("dx_mapping_unscored.csv", "no")):
        with open(DATA / file, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                code = row["SNOMEDCTCode"]
                attributes = {"abbreviation": row["Abbreviation"], "scored": scored}
                labels.append(VocabLabel(row["Dx"], f"SNOMED:{code}", code, row["Dx"], attributes))
    return Vocabulary(
        "cinc2021", "PhysioNet/CinC Challenge 2021: SNOMED-CT codes (scored first)", tuple(labels)
    )


def _mimiciv_ked() -> Vocabulary:
    lines = (DATA / "mimiciv_ked_105.txt").read_text(encoding="utf-8").splitlines()
    labels = tuple(VocabLabel(line.strip(), line.strip()) for line in lines if line.strip())
    return Vocabulary(
        "mimiciv-ked", "MIMIC-IV-ECG: the 105 labels of the ECGFM-KED reference", labels
    )


_LOADERS: dict[str, Callable[[], Vocabulary]] = {
    "ptbxl": _ptbxl,
    "cinc2021": _cinc2021,
    "mimiciv-ked": _mimiciv_ked,
}


def list_vocabularies() -> list[str]:
    return list(_LOADERS)


@cache
def load_vocabulary(name: str) -> Vocabulary:
    """A vocabulary by name; ``KeyError`` lists the known names."""
    if name not in _LOADERS:
        raise KeyError(f"unknown vocabulary {name!r}; known: {', '.join(_LOADERS)}")
    return _LOADERS[name]()
