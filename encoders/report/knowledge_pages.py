"""The knowledge part of the report: one page per diagnosis with every version and its diff."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kb_store.store import Diagnosis, KnowledgeBase, StoredKnowledge
from knowledge.diff import FieldChange, diff_records

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class VersionView:
    """A stored version with its record as a tree and its changes from the version before."""

    stored: StoredKnowledge
    record: dict[str, Any]  # the record's fields, empty ones left out
    changes: list[FieldChange]  # from the previous version; empty for the first
    previous: int | None

    @property
    def anchor(self) -> str:
        return f"v{self.stored.version}"


@dataclass(frozen=True)
class DiagnosisPage:
    """A diagnosis, its names and codes, and its knowledge versions, newest first."""

    diagnosis: Diagnosis
    aliases: list[tuple[str, str]]  # (alias, kind)
    versions: list[VersionView]
    usable: int | None  # the version that feeds embeddings, training and zero-shot, if any

    @property
    def href(self) -> str:
        """The page's path from the site's root."""
        slug = _NOT_SLUG.sub("-", self.diagnosis.name.lower()).strip("-")
        return f"knowledge/{self.diagnosis.id}-{slug or 'diagnosis'}.html"

    @property
    def current(self) -> VersionView:
        return self.versions[0]


def record_tree(value: Any) -> Any:
    """A record's JSON form without empty fields (``None``, ``[]``, ``{}``), for display."""
    if isinstance(value, dict):
        pruned = {k: record_tree(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [record_tree(v) for v in value]
    return value


def _versions(history: Sequence[StoredKnowledge]) -> list[VersionView]:
    views: list[VersionView] = []
    previous: StoredKnowledge | None = None
    for stored in history:  # oldest first
        changes = diff_records(previous.record, stored.record) if previous else []
        record = record_tree(stored.record.model_dump(mode="json"))
        views.append(VersionView(stored, record, changes, previous.version if previous else None))
        previous = stored
    return views[::-1]


def diagnosis_pages(kb: KnowledgeBase) -> list[DiagnosisPage]:
    """A page for every diagnosis with knowledge of any status, by name."""
    history: dict[int, list[StoredKnowledge]] = defaultdict(list)
    for stored in kb.all_knowledge(all_versions=True):  # by name, then version
        history[stored.diagnosis.id].append(stored)
    usable = {stored.diagnosis.id: stored.version for stored in kb.all_usable()}
    return [
        DiagnosisPage(
            versions[0].diagnosis,
            kb.aliases(diagnosis_id),
            _versions(versions),
            usable.get(diagnosis_id),
        )
        for diagnosis_id, versions in history.items()
    ]


@dataclass(frozen=True)
class LabelLink:
    """Where a label's diagnosis is described: its page (path from the site's root), its name."""

    href: str
    diagnosis: str


def label_links(
    kb: KnowledgeBase, labels: Sequence[str], pages: Sequence[DiagnosisPage]
) -> dict[str, LabelLink]:
    """Label -> the page of the diagnosis it resolves to, for labels that resolve to one."""
    by_id = {page.diagnosis.id: page.href for page in pages}
    return {
        label: LabelLink(by_id[diagnosis.id], diagnosis.name)
        for label, diagnosis in kb.resolve_many(list(labels)).items()
        if diagnosis is not None and diagnosis.id in by_id
    }
