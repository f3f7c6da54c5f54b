"""Check an LLM-written knowledge record against the curated record of the same diagnosis.

Field by field, a finding is a ``contradiction`` when the two cannot both be right (ranges
that do not overlap, disjoint leads or territories, a regular rhythm against an irregular
one, opposite wave directions) and a ``deviation`` when the record goes beyond the curated
one (a range partly outside the curated range, extra leads or territories). Fields that
only one of the records fills are not findings: the curated pack is not exhaustive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from kb_store.store import KnowledgeBase, StoredKnowledge
from ked.errors import UserError
from knowledge.curated import CuratedPack
from knowledge.schema import DiagnosisKnowledge, ValueRange


class NoLLMKnowledgeError(UserError, LookupError):
    """A diagnosis to check has no LLM-written version."""


class Severity(StrEnum):
    CONTRADICTION = "contradiction"
    DEVIATION = "deviation"


@dataclass(frozen=True)
class Finding:
    """One field where the record disagrees with the curated record."""

    severity: Severity
    path: str
    message: str
    value: Any
    curated: Any

    def describe(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass(frozen=True)
class RecordCheck:
    """The findings of one stored version; ``curated`` is ``None`` when there is none to
    compare with."""

    stored: StoredKnowledge
    curated: DiagnosisKnowledge | None
    findings: list[Finding]

    def count(self, severity: Severity) -> int:
        return sum(f.severity is severity for f in self.findings)


_IRREGULAR = {"regularly irregular", "irregularly irregular", "irregular"}
_OPPOSITE = {
    frozenset(p)
    for p in [
        ("elevated", "depressed"),
        ("positive", "negative"),
        ("upright", "inverted"),
        ("positive", "inverted"),
        ("upright", "negative"),
        ("peaked", "flattened"),
    ]
}
_UNITS = {"_ms": "ms", "_mv": "mV", "_bpm": "bpm", "_deg": "degrees"}


def check_record(record: DiagnosisKnowledge, curated: DiagnosisKnowledge) -> list[Finding]:
    """Every finding of ``record`` against ``curated``, in schema field order."""
    findings = list(_compare(record, curated, ""))
    if record.category != curated.category:
        findings.insert(
            0,
            Finding(
                Severity.CONTRADICTION,
                "category",
                f"{record.category} where the curated record says {curated.category}",
                record.category.value,
                curated.category.value,
            ),
        )
    mine = {t.territory.value for t in record.territories}
    theirs = {t.territory.value for t in curated.territories}
    findings += _sets("territories", mine, theirs, "territories")
    return findings


def curated_counterpart(
    kb: KnowledgeBase, diagnosis_id: int, pack: CuratedPack | None = None
) -> DiagnosisKnowledge | None:
    """The diagnosis's latest curated version in the knowledge base, else the pack's record
    for its name."""
    curated = [s for s in kb.history(diagnosis_id) if s.provenance.source == "curated"]
    if curated:
        return curated[-1].record
    return pack.resolve(kb.diagnosis(diagnosis_id).name) if pack is not None else None


def llm_versions_to_check(kb: KnowledgeBase, names: Sequence[str] = ()) -> list[StoredKnowledge]:
    """The latest LLM version of each named diagnosis; without names every proposed one."""
    if not names:
        return [s for s in kb.by_status("proposed") if s.provenance.source == "llm"]
    versions = []
    for name in names:
        diagnosis = kb.named(name)
        llm = [s for s in kb.history(diagnosis.id) if s.provenance.source == "llm"]
        if not llm:
            raise NoLLMKnowledgeError(f"{diagnosis.name!r} has no LLM knowledge to check")
        versions.append(llm[-1])
    return versions


def check_stored(
    kb: KnowledgeBase, versions: list[StoredKnowledge], pack: CuratedPack | None = None
) -> list[RecordCheck]:
    """Check each stored version against its diagnosis's curated record."""
    checks = []
    for stored in versions:
        curated = curated_counterpart(kb, stored.diagnosis.id, pack)
        findings = check_record(stored.record, curated) if curated is not None else []
        checks.append(RecordCheck(stored, curated, findings))
    return checks


def _compare(mine: BaseModel | None, theirs: BaseModel | None, path: str) -> Iterator[Finding]:
    if mine is None or theirs is None:
        return
    for name in type(mine).model_fields:
        a, b = getattr(mine, name), getattr(theirs, name)
        where = f"{path}.{name}" if path else name
        if a is None or b is None:
            continue
        if isinstance(a, ValueRange):
            yield from _ranges(where, a, b)
        elif isinstance(a, BaseModel):
            yield from _compare(a, b, where)
        elif name.endswith("leads") and a and b:
            yield from _sets(where, set(a), set(b), "leads")
        elif name == "regularity":
            yield from _regularity(where, a, b)
        elif name == "direction" and frozenset((a, b)) in _OPPOSITE:
            yield Finding(
                Severity.CONTRADICTION, where, f"{a} where the curated record says {b}", a, b
            )
        elif name in ("presence", "relation_to_qrs") and _contradicts(a, b):
            yield Finding(
                Severity.CONTRADICTION, where, f"{a!r} where the curated record says {b!r}", a, b
            )


def _ranges(path: str, mine: ValueRange, theirs: ValueRange) -> Iterator[Finding]:
    unit = next((u for suffix, u in _UNITS.items() if path.endswith(suffix)), "")
    low = theirs.min if theirs.min is not None else float("-inf")
    high = theirs.max if theirs.max is not None else float("inf")
    my_low = mine.min if mine.min is not None else float("-inf")
    my_high = mine.max if mine.max is not None else float("inf")
    if low <= my_low and my_high <= high:
        return
    disjoint = my_high < low or my_low > high
    where = "outside" if disjoint else "partly outside"
    yield Finding(
        Severity.CONTRADICTION if disjoint else Severity.DEVIATION,
        path,
        f"{mine.describe(unit)} is {where} the curated {theirs.describe(unit)}",
        mine.model_dump(),
        theirs.model_dump(),
    )


def _sets(path: str, mine: set[str], theirs: set[str], what: str) -> Iterator[Finding]:
    if not mine or not theirs or mine <= theirs:
        return
    extra = sorted(mine - theirs)
    if mine.isdisjoint(theirs):
        message = f"{', '.join(sorted(mine))}; the curated {what} are {', '.join(sorted(theirs))}"
        yield Finding(Severity.CONTRADICTION, path, message, sorted(mine), sorted(theirs))
    else:
        message = f"{', '.join(extra)} beyond the curated {', '.join(sorted(theirs))}"
        yield Finding(Severity.DEVIATION, path, message, sorted(mine), sorted(theirs))


def _regularity(path: str, mine: str, theirs: str) -> Iterator[Finding]:
    if "variable" in (mine, theirs) or mine == theirs:
        return
    one_regular = "regular" in (mine, theirs)
    both_specific = {mine, theirs} == {"regularly irregular", "irregularly irregular"}
    if one_regular or both_specific:
        yield Finding(
            Severity.CONTRADICTION,
            path,
            f"{mine} where the curated record says {theirs}",
            mine,
            theirs,
        )


def _contradicts(mine: str, theirs: str) -> bool:
    soft = {"variable", "hidden", "not applicable"}
    return mine != theirs and mine not in soft and theirs not in soft
