"""How a diagnosis's knowledge record lines up with the leads that drove the model's score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from knowledge.leads import sort_leads
from knowledge.schema import DiagnosisKnowledge, WaveFinding

DEFAULT_TOP_LEADS = 3

_WAVE_NAMES = {
    "p_wave": "P wave",
    "qrs_complex": "QRS complex",
    "st_segment": "ST segment",
    "t_wave": "T wave",
    "u_wave": "U wave",
}


@dataclass(frozen=True)
class LeadGroup:
    """Leads the record names for one territory, wave finding or reciprocal change, and which of
    them are among the most important leads (``common``, most important first)."""

    name: str
    leads: tuple[str, ...]
    common: tuple[str, ...]


@dataclass(frozen=True)
class KnowledgeMatch:
    """The knowledge record's criteria and leads next to the attribution's lead ranking.

    ``named_leads``: every lead the record names for its findings (its ``leads``, territories and
    wave findings; reciprocal leads are a group of their own). ``top_leads``: the most important
    present leads. ``named_share``: the share of the attribution on the named leads that are
    present; ``even_share``: that share if the attribution were spread evenly over the present
    leads, the level to compare it with.
    """

    diagnosis: str
    criteria: tuple[str, ...]
    named_leads: tuple[str, ...]
    top_leads: tuple[str, ...]
    common_leads: tuple[str, ...]
    missing_named_leads: tuple[str, ...]
    named_share: float
    even_share: float
    groups: tuple[LeadGroup, ...]


def match_knowledge(
    record: DiagnosisKnowledge,
    importance: Mapping[str, float],
    ranking: Sequence[str],
    *,
    top_leads: int = DEFAULT_TOP_LEADS,
) -> KnowledgeMatch:
    """Compare ``record`` with an attribution's lead ``importance`` (share per lead).

    ``ranking`` holds the present leads, most important first; its first ``top_leads`` count as
    the most important leads (leads without any attribution never do).
    """
    present = set(ranking)
    top = tuple(lead for lead in ranking[:top_leads] if importance[lead] > 0)

    def common(leads: Sequence[str]) -> tuple[str, ...]:
        return tuple(lead for lead in top if lead in leads)

    findings = [
        LeadGroup(f"{finding.territory} territory", tuple(finding.leads), common(finding.leads))
        for finding in record.territories
    ]
    if record.morphology is not None:
        findings.extend(
            LeadGroup(_WAVE_NAMES[field], tuple(finding.leads), common(finding.leads))
            for field, finding in record.morphology.findings().items()
            if isinstance(finding, WaveFinding) and finding.leads
        )
    named = sort_leads({*record.leads, *(lead for group in findings for lead in group.leads)})
    reciprocal = tuple(record.reciprocal_leads)
    if reciprocal:
        findings.append(LeadGroup("reciprocal changes", reciprocal, common(reciprocal)))
    named_present = [lead for lead in named if lead in present]
    return KnowledgeMatch(
        diagnosis=record.name,
        criteria=tuple(record.criteria),
        named_leads=tuple(named),
        top_leads=top,
        common_leads=common(named),
        missing_named_leads=tuple(lead for lead in named if lead not in present),
        named_share=sum(importance[lead] for lead in named_present),
        even_share=len(named_present) / len(present),
        groups=tuple(findings),
    )
