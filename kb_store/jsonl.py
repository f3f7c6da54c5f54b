"""Knowledge base export to, and validated idempotent import from, JSON Lines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kb_store.store import KnowledgeBase, Provenance, StoredKnowledge
from ked.errors import UserError
from knowledge.schema import DiagnosisKnowledge, format_validation_errors

_SOURCES = {"llm", "curated", "manual"}


class ImportFileError(UserError, ValueError):
    """A line of an import file is not a valid knowledge entry."""


@dataclass(frozen=True)
class JsonlImport:
    added: int
    unchanged: int


def entry(stored: StoredKnowledge) -> dict[str, Any]:
    """One exported line: the record, its diagnosis, version and provenance."""
    return {
        "diagnosis": stored.diagnosis.name,
        "version": stored.version,
        "created_at": stored.created_at.isoformat(),
        "content_sha256": stored.content_sha256,
        "provenance": asdict(stored.provenance),
        "record": stored.record.model_dump(mode="json"),
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


def _parse_line(path: Path, number: int, line: str) -> tuple[DiagnosisKnowledge, Provenance]:
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
    return record, Provenance(**{k: v for k, v in prov.items() if k in known})


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
    results = kb.add_many(items)
    added = sum(result.created for result in results)
    return JsonlImport(added=added, unchanged=len(results) - added)
