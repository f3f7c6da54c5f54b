"""How names and codes identify a diagnosis: alias namespaces and the lookup order.

Names, synonyms and free-text labels share one namespace; each code system has its own, so
PTB-XL's SCP code ``AMI`` (anterior MI) and CinC's abbreviation ``AMI`` (acute MI) do not
collide. A query is looked up among names first, then among codes, then among names again in
looser forms (without a parenthetical remark, plural words made singular: "premature atrial
contractions", "old myocardial infarction (scar)"); a ``SNOMED:`` or ``SCP:`` prefix restricts
it to that code system.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from knowledge.names import normalize_name
from knowledge.schema import DiagnosisKnowledge

NAMES = "name"
CODE_NAMESPACES: tuple[str, ...] = ("snomed_ct", "scp_ecg")
_CODE_PREFIX = re.compile(r"^\s*(snomed(?:[\s_-]*ct)?|sct|scp(?:[\s_-]*ecg)?)\s*:\s*", re.I)
_PARENTHETICAL = re.compile(r"[(\[][^)\]]*[)\]]")

Alias = tuple[str, str, str]  # (namespace, alias, kind)


def split_code_prefix(query: str) -> tuple[str | None, str]:
    """``("snomed_ct" | "scp_ecg" | None, rest)`` for queries like ``"SNOMED:164889003"``."""
    match = _CODE_PREFIX.match(query)
    if match is None:
        return None, query
    namespace = "snomed_ct" if match[1].lower().startswith(("snomed", "sct")) else "scp_ecg"
    return namespace, query[match.end() :]


def lookup_plan(query: str) -> list[tuple[tuple[str, ...], str]]:
    """The (namespaces, key) lookups to try in order for a name, synonym or code."""
    namespace, text = split_code_prefix(query)
    key = normalize_name(text)
    if namespace is not None:
        return [((namespace,), key)]
    return [((NAMES,), key), (CODE_NAMESPACES, key)] + [((NAMES,), k) for k in loose_keys(text)]


def loose_keys(name: str) -> list[str]:
    """Looser keys for a name, to try after the exact one: without parenthetical remarks,
    then with plural words made singular (English endings only)."""
    exact = normalize_name(name)
    bare = normalize_name(_PARENTHETICAL.sub(" ", name))
    keys: list[str] = []
    for key in (bare, _singular(exact), _singular(bare)):
        if key and key != exact and key not in keys:
            keys.append(key)
    return keys


def _singular(key: str) -> str:
    return " ".join(_singular_word(word) for word in key.split())


def _singular_word(word: str) -> str:
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("xes"):
        return word[:-2]
    return word[:-1]


def record_aliases(record: DiagnosisKnowledge, extra_labels: Iterable[str] = ()) -> list[Alias]:
    """Every alias a record gives its diagnosis.

    Codes of other systems (``codes.other``, e.g. ICD-10) are not aliases: one ICD-10 code
    often covers several ECG diagnoses (I47.1 is AVNRT, AVRT and junctional tachycardia).
    """
    aliases = [(NAMES, record.name, "name")]
    aliases += [(NAMES, s, "synonym") for s in record.synonyms]
    aliases += [(NAMES, label, "label") for label in extra_labels]
    aliases += [("snomed_ct", c, "snomed_ct") for c in record.codes.snomed_ct]
    aliases += [("scp_ecg", c, "scp_ecg") for c in record.codes.scp_ecg]
    return aliases


def refers_to(record: DiagnosisKnowledge, label: str, known_names: Iterable[str] = ()) -> bool:
    """True when ``record`` is about the diagnosis ``label`` asks for.

    Its name, a synonym or a code must be what the label looks up (:func:`lookup_plan`), or
    one of ``known_names`` (the aliases the knowledge base already has for that diagnosis).
    """
    own = {(namespace, normalize_name(alias)) for namespace, alias, _ in record_aliases(record)}
    wanted = {(ns, key) for namespaces, key in lookup_plan(label) for ns in namespaces}
    wanted |= {(NAMES, normalize_name(name)) for name in known_names}
    return not own.isdisjoint(wanted)
