"""Knowledge base export to, and validated idempotent import from, JSON Lines.

Each line carries its version's review (status, time, note), so an accepted or rejected LLM
record keeps that decision in another knowledge base. An imported review applies to the
versions the import adds; a version already stored keeps the review it has there. A line
without a review gets the status its source implies (curated accepted, others proposed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kb_store.store import KnowledgeBase, Provenance, Status, StoredKnowledge, initial_status
from ked.config import KNOWLEDGE_STATUSES
from ked.errors import UserError
from knowledge.schema import DiagnosisKnowledge, format_validation_errors

_SOURCES = {"llm", "curated", "manual"}


class ImportFileError(UserError, ValueError):
    """A line of an import file is not a valid knowledge entry."""


@dataclass(frozen=True)
class JsonlImport:
    added: int
    unchanged: int


@dataclass(frozen=True)
class Review:
    """A version's review as exported: its status, when it was set, and the reviewer's note."""

    status: Status
    reviewed_at: datetime | None = None
    note: str | None = None


@dataclass(frozen=True)
class _Line:
    record: DiagnosisKnowledge
    provenance: Provenance
    review: Review | None


def entry(stored: StoredKnowledge) -> dict[str, Any]:
    """One exported line: the record, its diagnosis, version and provenance."""
    return {
        "diagnosis": stored.diagnosis.name,
        "version": stored.version,
        "created_at": stored.created_at.isoformat(),
        "content_sha256": stored.content_sha256,
        "provenance": asdict(stored.provenance),
        "record": stored.record.model_dump(mode="json"),
        "review": {
            "status": stored.status,
            "reviewed_at": stored.reviewed_at.isoformat() if stored.reviewed_at else None,
            "note": stored.review_note,
        },
    }


def export_jsonl(kb: KnowledgeBase, out: Path, *, all_versions: bool = False) -> int:
    """Write current (or all) knowledge to ``out``; returns the number of lines."""
    rows = kb.all_knowledge(all_versions=all_versions)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for stored in rows:
            fh.write(json.dumps(entry(stored), ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(out)
    return len(rows)


def _parse_line(path: Path, number: int, line: str) -> _Line:
    where = f"{path}:{number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or "record" not in data:
        raise ImportFileError(f"{where}: expected an object with a 'record' key")
    try:
        record = DiagnosisKnowledge.model_validate(data["record"])
    except ValidationError as exc:
        raise ImportFileError(f"{where}: {'; '.join(format_validation_errors(exc))}") from None
    prov = data.get("provenance") or {"source": "manual"}
    if prov.get("source") not in _SOURCES:
        raise ImportFileError(f"{where}: provenance.source must be one of {sorted(_SOURCES)}")
    known = set(Provenance.__dataclass_fields__)
    provenance = Provenance(**{k: v for k, v in prov.items() if k in known})
    return _Line(record, provenance, _parse_review(where, data.get("review")))


def _parse_review(where: str, data: Any) -> Review | None:
    if data is None:
        return None
    if not isinstance(data, dict) or data.get("status") not in KNOWLEDGE_STATUSES:
        raise ImportFileError(
            f"{where}: review.status must be one of {', '.join(KNOWLEDGE_STATUSES)}"
        )
    try:
        when = datetime.fromisoformat(data["reviewed_at"]) if data.get("reviewed_at") else None
    except (TypeError, ValueError):
        raise ImportFileError(f"{where}: review.reviewed_at is not an ISO 8601 time") from None
    return Review(data["status"], when, data.get("note"))


def import_jsonl(kb: KnowledgeBase, path: Path) -> JsonlImport:
    """Validate every line first, then store them in one transaction.

    A record whose content is already a version of its diagnosis is skipped, so importing
    the same file twice writes nothing the second time.
    """
    items = [
        _parse_line(path, number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    with kb.transaction():  # records and their reviews land together
        results = kb.add_many([(line.record, line.provenance) for line in items])
        for line, result in zip(items, results, strict=True):
            review = line.review
            if result.created and review is not None and _reviewed(review, line.provenance):
                kb.set_status(
                    result.diagnosis.id,
                    review.status,
                    version=result.version,
                    note=review.note,
                    reviewed_at=review.reviewed_at,
                )
    added = sum(result.created for result in results)
    return JsonlImport(added=added, unchanged=len(results) - added)


def _reviewed(review: Review, provenance: Provenance) -> bool:
    """Whether a review says more than the status the record's source gives it anyway."""
    return review.reviewed_at is not None or review.status != initial_status(provenance.source)
