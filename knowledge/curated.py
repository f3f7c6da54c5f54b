"""The curated knowledge pack: ked's offline default knowledge, written by its authors.

One schema-valid record per diagnosis needed by the shipped vocabularies, in
``knowledge/curated/records/*.json`` (JSON arrays), with the pack's version in
``knowledge/curated/pack.json``. Importing is idempotent: records already stored with the
same content are not written again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from kb_store.aliases import lookup_plan, record_aliases
from kb_store.store import KnowledgeBase, Provenance, content_sha256
from ked.errors import UserError
from knowledge.names import normalize_name
from knowledge.schema import DiagnosisKnowledge, format_validation_errors
from knowledge.vocab import load_vocabulary

log = logging.getLogger(__name__)

PACK_DIR = Path(__file__).resolve().parent / "curated"


class PackError(UserError, ValueError):
    """The pack on disk is invalid or does not cover what was asked of it."""


@dataclass(frozen=True)
class CuratedPack:
    version: str
    records: tuple[DiagnosisKnowledge, ...]

    @cached_property
    def index(self) -> dict[tuple[str, str], DiagnosisKnowledge]:
        """(namespace, key) -> record, for resolving labels inside the pack."""
        index: dict[tuple[str, str], DiagnosisKnowledge] = {}
        for record in self.records:
            for namespace, alias, _ in record_aliases(record):
                key = (namespace, normalize_name(alias))
                if index.setdefault(key, record) is not record:
                    raise PackError(
                        f"{alias!r} names both {index[key].name!r} and {record.name!r} "
                        f"({namespace})"
                    )
        return index

    def resolve(self, query: str) -> DiagnosisKnowledge | None:
        """The record a vocabulary query resolves to, by the knowledge base's own rules."""
        index = self.index
        for namespaces, key in lookup_plan(query):
            found = {id(r): r for ns in namespaces if (r := index.get((ns, key)))}
            if len(found) == 1:
                return next(iter(found.values()))
        return None


def load_pack(directory: Path = PACK_DIR) -> CuratedPack:
    """Read and validate every record of the pack; errors name the file and the record."""
    manifest = json.loads((directory / "pack.json").read_text(encoding="utf-8"))
    records: list[DiagnosisKnowledge] = []
    for path in sorted((directory / "records").glob("*.json")):
        for i, raw in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            try:
                records.append(DiagnosisKnowledge.model_validate(raw))
            except ValidationError as exc:
                name = raw.get("name", "?") if isinstance(raw, dict) else "?"
                errors = "; ".join(format_validation_errors(exc))
                raise PackError(f"{path.name} record {i} ({name}): {errors}") from None
    return CuratedPack(version=str(manifest["version"]), records=tuple(records))


@dataclass(frozen=True)
class PackImport:
    pack_version: str
    added: tuple[str, ...]
    unchanged: int


def records_for_vocabulary(pack: CuratedPack, vocabulary: str) -> list[DiagnosisKnowledge]:
    """The pack's records that a vocabulary's labels resolve to, in vocabulary order."""
    chosen: dict[str, DiagnosisKnowledge] = {}
    missing = []
    for label in load_vocabulary(vocabulary).labels:
        record = pack.resolve(label.query)
        if record is None:
            missing.append(label.label)
        else:
            chosen.setdefault(record.name, record)
    if missing:
        raise PackError(f"the pack has no record for {vocabulary} labels: {', '.join(missing)}")
    return list(chosen.values())


def import_pack(
    kb: KnowledgeBase, *, vocabulary: str | None = None, pack: CuratedPack | None = None
) -> PackImport:
    """Store the pack's records (or one vocabulary's) that the knowledge base lacks."""
    pack = pack or load_pack()
    records = list(pack.records) if vocabulary is None else records_for_vocabulary(pack, vocabulary)
    new = [r for r in records if not _stored(kb, r)]
    if new:
        run_id = kb.start_run("import-pack", {"pack_version": pack.version, "vocab": vocabulary})
        provenance = Provenance(source="curated", provider="ked", pack_version=pack.version)
        results = kb.add_many([(r, provenance) for r in new], run_id=run_id)
        added = tuple(res.diagnosis.name for res in results if res.created)
        kb.finish_run(
            run_id, "completed", {"added": len(added), "unchanged": len(records) - len(new)}
        )
    else:
        added = ()
    log.info(
        "curated pack %s: %d added, %d unchanged", pack.version, len(added), len(records) - len(new)
    )
    return PackImport(pack.version, added, len(records) - len(new))


def _stored(kb: KnowledgeBase, record: DiagnosisKnowledge) -> bool:
    """Whether this exact content is already a version of the record's diagnosis."""
    diagnosis = kb.resolve(record.name)
    if diagnosis is None:
        return False
    digest = content_sha256(record)
    return any(stored.content_sha256 == digest for stored in kb.history(diagnosis.id))
