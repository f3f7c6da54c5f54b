"""Clinical consistency checks across the fields of a knowledge record.

Each rule returns a message that names the field and the reason, or nothing. The rules
encode standard adult 12-lead criteria that a record's own name commits it to: a
"bradycardia" is slower than 60 bpm, a complete bundle branch block has a QRS of at least
120 ms, an "inferior" infarction involves II, III or aVF.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from knowledge.leads import TERRITORY_LEADS, TERRITORY_WORDS, Territory, sort_leads
from knowledge.names import normalize_name

if TYPE_CHECKING:
    from knowledge.schema import DiagnosisKnowledge, ValueRange

Rule = Callable[["DiagnosisKnowledge"], Iterator[str]]

_TERRITORIAL_CATEGORIES = {"ischemia", "infarction", "morphology"}


def check_consistency(record: DiagnosisKnowledge) -> list[str]:
    """All consistency problems of ``record`` (empty when it is consistent)."""
    return [problem for rule in RULES for problem in rule(record)]


def _words(record: DiagnosisKnowledge) -> str:
    return normalize_name(record.name)


def _has(name: str, *patterns: str) -> bool:
    return any(re.search(rf"\b{p}", name) for p in patterns)


def _needs(rng: ValueRange | None, field: str, why: str) -> Iterator[str]:
    if rng is None:
        yield f"{field}: required because {why}"


def _rate_matches_name(record: DiagnosisKnowledge) -> Iterator[str]:
    name = _words(record)
    brady, tachy = _has(name, "brady"), _has(name, "tachy")
    if brady == tachy:  # neither, or a brady-tachy syndrome
        return
    rate = record.rhythm.rate_bpm if record.rhythm else None
    kind = "bradycardia" if brady else "tachycardia"
    yield from _needs(rate, "rhythm.rate_bpm", f"the name says {kind}")
    if rate is None:
        return
    if brady and ((rate.min is not None and rate.min >= 60) or (rate.max or 0) > 60):
        yield (
            f"rhythm.rate_bpm: {rate.describe('bpm')} contradicts a bradycardia "
            "(a rate below 60 bpm)"
        )
    atrial = record.rhythm.atrial_rate_bpm if record.rhythm and "atrial" in name else None
    fast_atria = atrial is not None and atrial.min is not None and atrial.min >= 100
    if tachy and (rate.min is None or rate.min < 100) and not fast_atria:
        yield (
            f"rhythm.rate_bpm: {rate.describe('bpm')} contradicts a tachycardia "
            "(a minimum rate of at least 100 bpm, or an atrial rate of at least 100 per "
            "minute for an atrial tachycardia with AV block)"
        )


def _pr_matches_name(record: DiagnosisKnowledge) -> Iterator[str]:
    name = _words(record)
    long_pr = _has(name, "first degree", "1st degree", "prolonged pr")
    short_pr = _has(name, "short pr", "shortened pr")
    if not (long_pr or short_pr) or _has(name, "borderline"):
        return
    pr = record.rhythm.pr_interval_ms if record.rhythm else None
    yield from _needs(pr, "rhythm.pr_interval_ms", "the name is about the PR interval")
    if pr is None:
        return
    if long_pr and (pr.min is None or pr.min < 200):
        yield f"rhythm.pr_interval_ms: {pr.describe('ms')} is not a prolonged PR (> 200 ms)"
    if short_pr and (pr.max is None or pr.max > 120):
        yield f"rhythm.pr_interval_ms: {pr.describe('ms')} is not a short PR (< 120 ms)"


def _qt_matches_name(record: DiagnosisKnowledge) -> Iterator[str]:
    name = _words(record)
    long_qt = _has(name, "long qt", "prolonged qt")
    short_qt = _has(name, "short qt", "decreased qt", "shortened qt")
    if not (long_qt or short_qt):
        return
    qt = record.morphology.qt_interval if record.morphology else None
    qtc = qt.qtc_ms if qt else None
    yield from _needs(qtc, "morphology.qt_interval.qtc_ms", "the name is about the QT interval")
    if qtc is None:
        return
    if long_qt and (qtc.min is None or qtc.min < 440):
        yield f"morphology.qt_interval.qtc_ms: {qtc.describe('ms')} is not a long QTc (>= 440 ms)"
    if short_qt and (qtc.max is None or qtc.max > 390):
        yield f"morphology.qt_interval.qtc_ms: {qtc.describe('ms')} is not a short QTc (<= 390 ms)"


def _qrs_matches_bundle_branch_block(record: DiagnosisKnowledge) -> Iterator[str]:
    name = _words(record)
    if "bundle branch block" not in name:
        return
    qrs = record.morphology.qrs_complex if record.morphology else None
    duration = qrs.duration_ms if qrs else None
    yield from _needs(
        duration, "morphology.qrs_complex.duration_ms", "the name is a bundle branch block"
    )
    if duration is None:
        return
    if "incomplete" in name:
        if duration.max is None or duration.max > 120:
            yield (
                f"morphology.qrs_complex.duration_ms: {duration.describe('ms')} is too broad "
                "for an incomplete bundle branch block (< 120 ms)"
            )
    elif duration.min is None or duration.min < 120:
        yield (
            f"morphology.qrs_complex.duration_ms: {duration.describe('ms')} is too narrow "
            "for a complete bundle branch block (>= 120 ms)"
        )


def _named_territories(name: str) -> list[Territory]:
    found = []
    for word, territory in TERRITORY_WORDS:
        if re.search(rf"\b{word}", name):
            found.append(territory)
            name = re.sub(rf"\b{word}\w*", " ", name)
    return found


def _leads_match_named_territory(record: DiagnosisKnowledge) -> Iterator[str]:
    if record.category.value not in _TERRITORIAL_CATEGORIES:
        return
    involved = set(record.leads) | set(record.reciprocal_leads)
    for territory in _named_territories(_words(record)):
        expected = TERRITORY_LEADS[territory]
        if not involved & expected:
            yield (
                f"leads: the name says {territory} but none of its leads "
                f"({', '.join(sort_leads(expected))}) is listed"
            )


def _territory_leads_are_listed(record: DiagnosisKnowledge) -> Iterator[str]:
    involved = set(record.leads) | set(record.reciprocal_leads)
    for i, finding in enumerate(record.territories):
        missing = [lead for lead in finding.leads if lead not in involved]
        if missing:
            yield (
                f"territories[{i}].leads: {', '.join(missing)} not listed in leads "
                "or reciprocal_leads"
            )


def _reciprocal_leads_are_distinct(record: DiagnosisKnowledge) -> Iterator[str]:
    both = set(record.leads) & set(record.reciprocal_leads)
    if both:
        yield f"reciprocal_leads: {', '.join(sort_leads(both))} also listed as primary leads"


def _describes_the_ecg(record: DiagnosisKnowledge) -> Iterator[str]:
    if record.rhythm is None and (record.morphology is None or not record.morphology.findings()):
        yield "rhythm, morphology: a record must describe the rhythm or at least one wave"
    if record.category.value == "rhythm" and record.rhythm is None:
        yield "rhythm: required for a diagnosis in the rhythm category"


def _names_are_distinct(record: DiagnosisKnowledge) -> Iterator[str]:
    seen = {normalize_name(record.name)}
    for synonym in record.synonyms:
        key = normalize_name(synonym)
        if key in seen:
            yield f"synonyms: {synonym!r} repeats the name or another synonym"
        seen.add(key)
    own = {normalize_name(record.name)}
    for i, differential in enumerate(record.differentials):
        if normalize_name(differential.name) in own:
            yield f"differentials[{i}].name: a diagnosis is not its own differential"


RULES: tuple[Rule, ...] = (
    _rate_matches_name,
    _pr_matches_name,
    _qt_matches_name,
    _qrs_matches_bundle_branch_block,
    _leads_match_named_territory,
    _territory_leads_are_listed,
    _reciprocal_leads_are_distinct,
    _describes_the_ecg,
    _names_are_distinct,
)
