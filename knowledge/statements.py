"""Machine-report statements -> labels of a vocabulary (MIMIC-IV-ECG's statements -> mimiciv-ked).

A MIMIC-IV-ECG report is up to 18 statements written by the ECG cart ("Sinus rhythm",
"Atrial fibrillation with rapid ventricular response", "Possible anterior infarct - age
undetermined", "Lateral T wave changes are nonspecific", "--- Pediatric criteria used ---").
`StatementMapper` maps each one to labels of the 105-label ``mimiciv-ked`` vocabulary, driven by
``vocab_data/mimiciv_ked_statements.csv``:

- ``spelling`` rows rewrite words and phrases to one canonical spelling on both sides (label
  names and statements): abbreviations (``RBBB``, ``LVH``, ``PVCs``), variants (``infarct``,
  ``nonspecific``, ``1st degree A-V block``);
- ``synonym`` rows name the labels of a phrase that spells no label (``otherwise normal ECG``,
  ``low voltage, extremity and precordial leads``; several labels separated by ``;``);
- ``ignore`` rows name non-diagnostic statements (recording quality, workflow, comparison with
  an earlier tracing) and why they carry no label.

A statement that neither names a label nor is a synonym is split into clauses (at commas, " - ",
"with", "but", "may be due to" and the like), each clause cleared of hedges ("possible",
"consider", "- age undetermined") and read again; "X are nonspecific" is "non-specific X" and
"X, probably old" is "old X". Hedged findings keep their label, as the machine asserted them.
What is still not found is returned as unmatched, never guessed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from knowledge.names import normalize_name
from knowledge.vocab import DATA, load_vocabulary

STATEMENT_TABLE = DATA / "mimiciv_ked_statements.csv"

# Clause boundaries in a statement's raw text (before normalisation removes punctuation).
_CLAUSE_SPLIT = re.compile(
    r"\s*(?:,|;|\s-+\s|\s(?:with|but|and probably|may be due to|probably due to|possibly due to|"
    r"consistent with|suggests|consider)\s)\s*",
    re.IGNORECASE,
)
_HEDGES = re.compile(
    r"^(?:(?:possible|probable|probably|consider|cannot rule out|may be|likely|suggests|"
    r"suggestive of|minimal|marked|borderline|definite)\s+)+"
)
_SUFFIXES = re.compile(r"\s+(?:age undetermined|of undetermined age|possibly acute)$")
_NONSPECIFIC = re.compile(r"^(?P<finding>.+?)\s+(?:are|is)?\s*non specific$")
_OLD = re.compile(r"^(?P<finding>.+?)\s+(?:probably\s+)?old$")


class StatementTableError(ValueError):
    """A statement table that names unknown labels, repeats a phrase or is redundant."""


@dataclass(frozen=True)
class StatementMatch:
    """What one statement says: its labels, or why it carries none."""

    statement: str
    labels: tuple[str, ...] = ()
    ignored: str | None = None
    """Why a non-diagnostic statement carries no label (None for a diagnostic one)."""
    unmatched: tuple[str, ...] = ()
    """Clauses that name no label of the vocabulary."""

    @property
    def diagnostic(self) -> bool:
        return self.ignored is None


@dataclass(frozen=True)
class TableCoverage:
    """What the table covers: its rows and the vocabulary labels its synonyms reach."""

    vocabulary_labels: int
    spelling_rules: int
    synonyms: int
    ignore_rules: int
    labels_with_synonyms: int


class StatementMapper:
    """Maps report statements to the labels of one vocabulary (see the module docstring)."""

    def __init__(self, labels: Sequence[str], table: Path = STATEMENT_TABLE) -> None:
        self.labels = tuple(labels)
        rows = _read_table(table)
        self._spelling = [
            (re.compile(rf"\b{re.escape(normalize_name(p))}\b"), normalize_name(v))
            for kind, p, v in rows
            if kind == "spelling"
        ]
        self._by_key: dict[str, tuple[str, ...]] = {}
        for label in self.labels:
            key = self.key(label)
            if key in self._by_key:
                raise StatementTableError(
                    f"{table}: labels {self._by_key[key][0]!r} and {label!r} have the same key "
                    f"{key!r}; a spelling rule merges two labels"
                )
            self._by_key[key] = (label,)
        known = set(self.labels)
        self._synonyms = 0
        for kind, phrase, value in rows:
            if kind != "synonym":
                continue
            targets = tuple(t.strip() for t in value.split(";") if t.strip())
            unknown = [t for t in targets if t not in known]
            key = self.key(phrase)
            if unknown or not targets:
                raise StatementTableError(f"{table}: {phrase!r} names unknown labels {unknown}")
            if key in self._by_key:
                raise StatementTableError(
                    f"{table}: synonym {phrase!r} already reads as {self._by_key[key]} "
                    f"(key {key!r}); remove the row"
                )
            self._by_key[key] = targets
            self._synonyms += 1
        self._ignored = [
            (re.compile(rf"\b{re.escape(self.key(p))}\b"), reason)
            for kind, p, reason in rows
            if kind == "ignore"
        ]
        self._matches: dict[str, StatementMatch] = {}

    def key(self, text: str) -> str:
        """The canonical lookup key of a label or statement (normalised, spelling rules applied)."""
        key = normalize_name(text)
        for pattern, replacement in self._spelling:
            key = pattern.sub(replacement, key)
        return " ".join(key.split())

    def match(self, statement: str) -> StatementMatch:
        """The labels of one statement, why it is ignored (every clause is non-diagnostic), or
        its unmatched clauses. Remembered per text: reports repeat the same statements."""
        text = statement.strip()
        if text not in self._matches:
            self._matches[text] = self._match(text)
        return self._matches[text]

    def _match(self, text: str) -> StatementMatch:
        if not normalize_name(text):
            return StatementMatch(text, ignored="no words (punctuation only)")
        whole = self._lookup(self.key(text))
        if whole is not None:
            return StatementMatch(text, labels=whole)
        labels: list[str] = []
        unmatched: list[str] = []
        reasons: list[str] = []
        for clause in (c for c in _CLAUSE_SPLIT.split(text) if normalize_name(c)):
            key = self.key(clause)
            if (reason := self._ignore_reason(key)) is not None:
                reasons.append(reason)
            elif (found := self._lookup(key)) is not None:
                labels.extend(found)
            else:
                unmatched.append(clause.strip())
        ignored = reasons[0] if reasons and not labels and not unmatched else None
        return StatementMatch(text, tuple(dict.fromkeys(labels)), ignored, tuple(unmatched))

    def match_all(self, statements: Iterable[str]) -> list[StatementMatch]:
        """`match` for each statement that is not blank."""
        return [self.match(s) for s in statements if s.strip()]

    def coverage(self) -> TableCoverage:
        synonym_labels = {
            label for labels in self._by_key.values() if len(labels) > 1 for label in labels
        } | {labels[0] for key, labels in self._by_key.items() if key != self.key(labels[0])}
        return TableCoverage(
            vocabulary_labels=len(self.labels),
            spelling_rules=len(self._spelling),
            synonyms=self._synonyms,
            ignore_rules=len(self._ignored),
            labels_with_synonyms=len(synonym_labels),
        )

    def _ignore_reason(self, key: str) -> str | None:
        return next((reason for pattern, reason in self._ignored if pattern.search(key)), None)

    def _lookup(self, key: str) -> tuple[str, ...] | None:
        """Labels of a key as it stands, then without hedges and with its suffix rules."""
        if key in self._by_key:
            return self._by_key[key]
        bare = _SUFFIXES.sub("", _HEDGES.sub("", key)).strip()
        for pattern, prefix in ((_NONSPECIFIC, "non specific"), (_OLD, "old")):
            found = pattern.match(bare)
            if found:
                bare = f"{prefix} {_HEDGES.sub('', found['finding'])}"
        return self._by_key.get(bare)


def _read_table(path: Path) -> list[tuple[str, str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [
            (r["kind"].strip(), r["phrase"].strip(), r["value"].strip()) for r in csv.DictReader(fh)
        ]
    bad = [row for row in rows if row[0] not in {"spelling", "synonym", "ignore"} or not row[1]]
    if bad:
        raise StatementTableError(f"{path}: rows of unknown kind or without a phrase: {bad[:3]}")
    return rows


@cache
def mimiciv_statement_mapper() -> StatementMapper:
    """The mapper of MIMIC-IV-ECG statements to the ``mimiciv-ked`` labels."""
    return StatementMapper([label.label for label in load_vocabulary("mimiciv-ked").labels])
