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
    return Vocabulary("ptbxl", "PTB-XL: 71 SCP-ECG statements", _ptbxl_statements())


@cache
def _ptbxl_statements() -> tuple[VocabLabel, ...]:
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
    return tuple(labels)


# PTB-XL's diagnostic classes and sub-classes (the super_class:* and sub_class:* columns) that are
# not a single SCP statement, and the diagnosis each one names. A sub-class of one statement
# (CLBBB, LVH ...) is that statement.
_PTBXL_GROUP_QUERIES = {
    "super_class:NORM": "SCP:NORM",
    "super_class:MI": "myocardial infarction",
    "super_class:STTC": "ST/T change",
    "super_class:CD": "conduction disturbance",
    "super_class:HYP": "hypertrophy",
    "sub_class:AMI": "SCP:AMI",
    "sub_class:IMI": "SCP:IMI",
    "sub_class:AVB": "AV block",
    "sub_class:ISCA": "anterior ischemia",
    "sub_class:ISCI": "inferior ischemia",
    "sub_class:STTC": "ST/T change",
    "sub_class:LAFB/LPFB": "left fascicular block",
}


def ptbxl_group_queries() -> dict[str, str]:
    """Each PTB-XL class and sub-class (``"sub_class:IMI"``) -> the query of its diagnosis.

    Group names are PTB-XL's without the padding underscores (``_AVB`` is ``AVB``).
    Sub-classes of a single statement map to that statement (``"sub_class:CLBBB"`` ->
    ``"SCP:CLBBB"``); the others to the diagnosis the group names (``"super_class:CD"`` ->
    ``"conduction disturbance"``, ``"sub_class:IMI"`` -> inferior MI in all its territories).
    """
    members: dict[str, list[str]] = {}
    for label in _ptbxl_statements():
        sub = label.attributes["diagnostic_subclass"]
        if sub:
            members.setdefault(f"sub_class:{sub.strip('_')}", []).append(label.query)
    singles = {group: codes[0] for group, codes in members.items() if len(codes) == 1}
    return {**singles, **_PTBXL_GROUP_QUERIES}


def ptbxl_groups_of(code: str) -> list[str]:
    """The PTB-XL sub-class and class (``["sub_class:CLBBB", "super_class:CD"]``) of a statement."""
    for label in _ptbxl_statements():
        if label.code == code and label.attributes["diagnostic_class"]:
            return [
                f"sub_class:{label.attributes['diagnostic_subclass'].strip('_')}",
                f"super_class:{label.attributes['diagnostic_class']}",
            ]
    return []


def _ptbxl_classes() -> Vocabulary:
    statements = {label.query for label in _ptbxl_statements()}
    seen: set[str] = set()
    labels = []
    for group, query in ptbxl_group_queries().items():
        if query in statements or query in seen:
            continue  # the statement's own label (or an earlier group) already names it
        seen.add(query)
        labels.append(VocabLabel(group, query, None, f"PTB-XL {group.replace('_', '-')}"))
    return Vocabulary(
        "ptbxl-classes",
        "PTB-XL: diagnostic classes and sub-classes that are not a single statement",
        tuple(labels),
    )


def _ptbxl_all() -> Vocabulary:
    labels = load_vocabulary("ptbxl").labels + load_vocabulary("ptbxl-classes").labels
    return Vocabulary(
        "ptbxl-all", "PTB-XL: the 71 SCP-ECG statements and its diagnostic classes", labels
    )


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
    "ptbxl-classes": _ptbxl_classes,
    "ptbxl-all": _ptbxl_all,
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
