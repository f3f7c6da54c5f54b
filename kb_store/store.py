"""The knowledge base: diagnoses, their aliases, versioned knowledge, failures and runs.

Each knowledge version has a review status: ``accepted`` (curated pack records, and records
a person accepted), ``proposed`` (LLM and other records nobody reviewed yet) or ``rejected``.
What feeds embeddings, training and zero-shot is the *usable* knowledge: the latest version
whose status is one of the knowledge base's usable statuses (:mod:`ked.config`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from kb_store.aliases import Alias, lookup_plan, record_aliases
from kb_store.connection import KnowledgeBaseError, connect, transaction
from kb_store.migrations import migrate, require_current
from ked.config import DEFAULT_USABLE_STATUSES, usable_statuses
from knowledge.names import normalize_name
from knowledge.schema import SCHEMA_VERSION, DiagnosisKnowledge

log = logging.getLogger(__name__)

Source = Literal["llm", "curated", "manual"]
Status = Literal["accepted", "proposed", "rejected"]


class UnknownVersionError(KnowledgeBaseError, LookupError):
    """A diagnosis has no knowledge version with that number."""


class UnknownDiagnosisError(KnowledgeBaseError, LookupError):
    """A name that resolves to no diagnosis."""


def initial_status(source: Source) -> Status:
    """Curated pack records start accepted; everything else waits for review."""
    return "accepted" if source == "curated" else "proposed"


@dataclass(frozen=True)
class Diagnosis:
    id: int
    name: str
    category: str | None


@dataclass(frozen=True)
class Provenance:
    """Where a knowledge record came from. Never holds credentials."""

    source: Source
    provider: str | None = None
    model: str | None = None
    prompt_sha256: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    raw_response: str | None = None
    pack_version: str | None = None


@dataclass(frozen=True)
class StoredKnowledge:
    diagnosis: Diagnosis
    version: int
    record: DiagnosisKnowledge
    provenance: Provenance
    content_sha256: str
    created_at: datetime
    run_id: int | None
    status: Status = "proposed"
    reviewed_at: datetime | None = None
    review_note: str | None = None


@dataclass(frozen=True)
class AddResult:
    diagnosis: Diagnosis
    version: int
    created: bool
    skipped_aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    run_id: int | None
    label: str
    attempt: int
    error_kind: str
    message: str
    raw_response: str | None
    created_at: datetime


def content_sha256(record: DiagnosisKnowledge) -> str:
    """SHA-256 of the record's canonical JSON: equal content, equal hash."""
    canonical = json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class KnowledgeBase:
    """A DuckDB knowledge base file. Use as a context manager, or call :meth:`close`.

    ``usable`` are the statuses whose knowledge :meth:`usable` and friends return.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        usable: Iterable[str] = DEFAULT_USABLE_STATUSES,
    ) -> None:
        self.path = Path(path).expanduser()
        self.read_only = read_only
        self.usable_statuses = usable_statuses(usable)
        self._in_transaction = False
        self.con = connect(self.path, read_only=read_only)
        if read_only:
            require_current(self.con, str(self.path))
        else:
            migrate(self.con)
            self._mark_interrupted_runs()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The block's writes land together or not at all; nested blocks join the outer one."""
        if self._in_transaction:
            yield
            return
        self._in_transaction = True
        try:
            with transaction(self.con):
                yield
        finally:
            self._in_transaction = False

    # -- diagnoses and names -------------------------------------------------------------

    def resolve(self, label: str) -> Diagnosis | None:
        """The diagnosis a name, synonym or code refers to (case/punctuation-insensitive).

        Names and synonyms win over codes; ``SNOMED:`` or ``SCP:`` prefixes pick a code system.
        A key that names two diagnoses resolves to none.
        """
        return self.resolve_many([label])[label]

    def resolve_many(self, labels: Sequence[str]) -> dict[str, Diagnosis | None]:
        """:meth:`resolve` for many labels with one query."""
        plans = {label: lookup_plan(label) for label in labels}
        keys = sorted({key for plan in plans.values() for _, key in plan})
        owners: dict[tuple[str, str], Diagnosis] = {
            (row[0], row[1]): Diagnosis(*row[2:])
            for row in self.con.execute(
                "SELECT a.namespace, a.alias_key, d.id, d.name, d.category FROM aliases a "
                "JOIN diagnoses d ON d.id = a.diagnosis_id WHERE list_contains(?, a.alias_key)",
                [keys],
            ).fetchall()
        }
        resolved: dict[str, Diagnosis | None] = {}
        for label, plan in plans.items():
            resolved[label] = None
            for namespaces, key in plan:
                found = {owners[(ns, key)] for ns in namespaces if (ns, key) in owners}
                if found:
                    resolved[label] = found.pop() if len(found) == 1 else None
                    break
        return resolved

    def named(self, name: str) -> Diagnosis:
        """:meth:`resolve`, with a clear error for a name that resolves to no diagnosis."""
        diagnosis = self.resolve(name)
        if diagnosis is None:
            raise UnknownDiagnosisError(f"no diagnosis named {name!r}")
        return diagnosis

    def with_knowledge(self, labels: Sequence[str]) -> set[str]:
        """The labels whose diagnosis has knowledge of any status (generation skips them)."""
        resolved = self.resolve_many(labels)
        ids = sorted({d.id for d in resolved.values() if d is not None})
        have = {
            row[0]
            for row in self.con.execute(
                "SELECT DISTINCT diagnosis_id FROM knowledge WHERE list_contains(?, diagnosis_id)",
                [ids],
            ).fetchall()
        }
        return {label for label, d in resolved.items() if d is not None and d.id in have}

    def diagnosis(self, diagnosis_id: int) -> Diagnosis:
        row = self.con.execute(
            "SELECT id, name, category FROM diagnoses WHERE id = ?", [diagnosis_id]
        ).fetchone()
        if row is None:
            raise KeyError(f"no diagnosis with id {diagnosis_id}")
        return Diagnosis(*row)

    def diagnoses(self) -> list[tuple[Diagnosis, int | None, str | None]]:
        """Every diagnosis with its current version and source (``None`` without knowledge)."""
        rows = self.con.execute(
            "SELECT d.id, d.name, d.category, k.version, k.source FROM diagnoses d "
            "LEFT JOIN current_knowledge k ON k.diagnosis_id = d.id ORDER BY lower(d.name)"
        ).fetchall()
        return [(Diagnosis(*r[:3]), r[3], r[4]) for r in rows]

    def latest_statuses(self) -> dict[int, Status]:
        """The status of each diagnosis's latest knowledge version, by diagnosis id."""
        rows = self.con.execute("SELECT diagnosis_id, status FROM current_knowledge").fetchall()
        return {int(r[0]): r[1] for r in rows}

    def aliases(self, diagnosis_id: int) -> list[tuple[str, str]]:
        """(alias, kind) pairs of a diagnosis."""
        rows = self.con.execute(
            "SELECT alias, kind FROM aliases WHERE diagnosis_id = ? ORDER BY kind, alias_key",
            [diagnosis_id],
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    # -- knowledge -----------------------------------------------------------------------

    def current(self, diagnosis_id: int) -> StoredKnowledge | None:
        """The latest knowledge version of a diagnosis, whatever its status (see :meth:`usable`)."""
        found = self._knowledge(
            "WHERE k.diagnosis_id = ? ORDER BY k.version DESC LIMIT 1", [diagnosis_id]
        )
        return found[0] if found else None

    def current_many(self, diagnosis_ids: Iterable[int]) -> dict[int, StoredKnowledge]:
        """:meth:`current` for many diagnoses with one query."""
        found = self._knowledge(
            "WHERE list_contains(?, k.diagnosis_id)",
            [sorted(set(diagnosis_ids))],
            table="current_knowledge",
        )
        return {stored.diagnosis.id: stored for stored in found}

    def usable(self, diagnosis_id: int) -> StoredKnowledge | None:
        """The knowledge that feeds embeddings, training and zero-shot: the latest version
        whose status is one of :attr:`usable_statuses`."""
        return self.usable_many([diagnosis_id]).get(diagnosis_id)

    def usable_many(self, diagnosis_ids: Iterable[int]) -> dict[int, StoredKnowledge]:
        """:meth:`usable` for many diagnoses with one query."""
        ids = sorted(set(diagnosis_ids))
        found = self._usable("list_contains(?, k.diagnosis_id)", [ids])
        return {stored.diagnosis.id: stored for stored in found}

    def all_usable(self) -> list[StoredKnowledge]:
        """:meth:`usable` knowledge of every diagnosis that has some, by name."""
        return self._usable("true", [])

    def _usable(self, where: str, params: list[Any]) -> list[StoredKnowledge]:
        return self._knowledge(
            f"WHERE {where} AND list_contains(?, k.status) QUALIFY row_number() OVER "
            "(PARTITION BY k.diagnosis_id ORDER BY k.version DESC) = 1 ORDER BY lower(d.name)",
            [*params, list(self.usable_statuses)],
        )

    def version(self, diagnosis_id: int, version: int | None = None) -> StoredKnowledge:
        """One knowledge version of a diagnosis (the latest when ``version`` is ``None``)."""
        if version is None:
            found = [s for s in [self.current(diagnosis_id)] if s is not None]
        else:
            found = self._knowledge(
                "WHERE k.diagnosis_id = ? AND k.version = ?", [diagnosis_id, version]
            )
        if not found:
            name = self.diagnosis(diagnosis_id).name
            which = f"no version {version}" if version is not None else "no knowledge"
            raise UnknownVersionError(f"{name!r} has {which}")
        return found[0]

    def versions_to_compare(
        self, diagnosis_id: int, from_version: int | None = None, to_version: int | None = None
    ) -> tuple[StoredKnowledge, StoredKnowledge]:
        """(old, new): ``to_version`` (default the latest) and ``from_version`` (default the
        version before it)."""
        new = self.version(diagnosis_id, to_version)
        if from_version is None and new.version == 1:
            raise UnknownVersionError(
                f"{new.diagnosis.name!r} has only one knowledge version, nothing to compare"
            )
        old = self.version(diagnosis_id, new.version - 1 if from_version is None else from_version)
        return old, new

    def set_status(
        self,
        diagnosis_id: int,
        status: Status,
        *,
        version: int | None = None,
        note: str | None = None,
        reviewed_at: datetime | None = None,
    ) -> StoredKnowledge:
        """Accept or reject (or send back to review) one version, the latest by default.

        ``reviewed_at`` keeps the time of a review made elsewhere (an imported one); default now.
        """
        usable_statuses([status])  # a clear error for an unknown status
        stored = self.version(diagnosis_id, version)
        self.con.execute(
            "UPDATE knowledge SET status = ?, review_note = ?, "
            "reviewed_at = coalesce(?, current_timestamp) WHERE diagnosis_id = ? AND version = ?",
            [status, note, reviewed_at, diagnosis_id, stored.version],
        )
        return self.version(diagnosis_id, stored.version)

    def by_status(self, status: Status) -> list[StoredKnowledge]:
        """Every knowledge version with ``status``, by diagnosis name then version."""
        return self._knowledge("WHERE k.status = ? ORDER BY lower(d.name), k.version", [status])

    def history(self, diagnosis_id: int) -> list[StoredKnowledge]:
        """Every knowledge version of a diagnosis, oldest first."""
        return self._knowledge("WHERE k.diagnosis_id = ? ORDER BY k.version", [diagnosis_id])

    def all_knowledge(self, *, all_versions: bool = False) -> list[StoredKnowledge]:
        """Latest (or all) knowledge of every diagnosis whatever its status, by name, version."""
        table = "knowledge" if all_versions else "current_knowledge"
        return self._knowledge("ORDER BY lower(d.name), k.version", [], table=table)

    def add_knowledge(
        self,
        record: DiagnosisKnowledge,
        provenance: Provenance,
        *,
        diagnosis_id: int | None = None,
        labels: Sequence[str] = (),
        run_id: int | None = None,
        force: bool = False,
    ) -> AddResult:
        """Store ``record`` as the next version of its diagnosis, in one transaction.

        The diagnosis is ``diagnosis_id`` when given, else the one the record's name or codes
        resolve to, else a new one. A record identical to a stored version of the same
        diagnosis is not stored again unless ``force``. ``labels`` become extra aliases.
        """
        with self.transaction():
            return self._add(record, provenance, diagnosis_id, labels, run_id, force)

    def add_many(
        self,
        items: Iterable[tuple[DiagnosisKnowledge, Provenance]],
        *,
        run_id: int | None = None,
    ) -> list[AddResult]:
        """Store several records in one transaction (all or nothing)."""
        with self.transaction():
            return [self._add(rec, prov, None, (), run_id, False) for rec, prov in items]

    def _add(
        self,
        record: DiagnosisKnowledge,
        provenance: Provenance,
        diagnosis_id: int | None,
        labels: Sequence[str],
        run_id: int | None,
        force: bool,
    ) -> AddResult:
        diagnosis = (
            self.diagnosis(diagnosis_id) if diagnosis_id is not None else self._match(record)
        )
        if diagnosis is None:
            diagnosis = self._create_diagnosis(record)
        skipped = self._add_aliases(diagnosis.id, record_aliases(record, labels))
        digest = content_sha256(record)
        if not force:
            same = self.con.execute(
                "SELECT version FROM knowledge WHERE diagnosis_id = ? AND content_sha256 = ? "
                "ORDER BY version DESC LIMIT 1",
                [diagnosis.id, digest],
            ).fetchone()
            if same:
                return AddResult(diagnosis, int(same[0]), False, skipped)
        row = self.con.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM knowledge WHERE diagnosis_id = ?",
            [diagnosis.id],
        ).fetchone()
        version = int(row[0]) if row else 1
        self.con.execute(
            "INSERT INTO knowledge (diagnosis_id, version, schema_version, record, content_sha256, "
            "source, provider, model, prompt_sha256, params, raw_response, pack_version, run_id, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                diagnosis.id,
                version,
                SCHEMA_VERSION,
                record.model_dump_json(),
                digest,
                provenance.source,
                provenance.provider,
                provenance.model,
                provenance.prompt_sha256,
                json.dumps(provenance.params, sort_keys=True),
                provenance.raw_response,
                provenance.pack_version,
                run_id,
                initial_status(provenance.source),
            ],
        )
        self.con.execute(
            "UPDATE diagnoses SET category = ? WHERE id = ?", [record.category.value, diagnosis.id]
        )
        return AddResult(diagnosis, version, True, skipped)

    def _match(self, record: DiagnosisKnowledge) -> Diagnosis | None:
        """An existing diagnosis named like the record, else one sharing one of its codes."""
        by_name = self.resolve(record.name)
        if by_name is not None:
            return by_name
        codes = [("SNOMED", c) for c in record.codes.snomed_ct]
        codes += [("SCP", c) for c in record.codes.scp_ecg]
        resolved = self.resolve_many([f"{ns}:{code}" for ns, code in codes])
        matches = set(resolved.values()) - {None}
        return matches.pop() if len(matches) == 1 else None

    def _create_diagnosis(self, record: DiagnosisKnowledge) -> Diagnosis:
        row = self.con.execute(
            "INSERT INTO diagnoses (name, name_key, category) VALUES (?, ?, ?) "
            "RETURNING id, name, category",
            [record.name, normalize_name(record.name), record.category.value],
        ).fetchone()
        assert row is not None
        return Diagnosis(*row)

    def _add_aliases(self, diagnosis_id: int, aliases: list[Alias]) -> tuple[str, ...]:
        wanted: dict[tuple[str, str], tuple[str, str]] = {}
        for namespace, alias, kind in aliases:
            wanted.setdefault((namespace, normalize_name(alias)), (alias, kind))
        keys = sorted({key for _, key in wanted})
        owners = {
            (ns, key): owner
            for ns, key, owner in self.con.execute(
                "SELECT namespace, alias_key, diagnosis_id FROM aliases "
                "WHERE list_contains(?, alias_key)",
                [keys],
            ).fetchall()
        }
        new = [
            [ns, key, alias, kind, diagnosis_id]
            for (ns, key), (alias, kind) in wanted.items()
            if key and (ns, key) not in owners
        ]
        if new:
            self.con.executemany(
                "INSERT INTO aliases (namespace, alias_key, alias, kind, diagnosis_id) "
                "VALUES (?, ?, ?, ?, ?)",
                new,
            )
        skipped = tuple(
            wanted[k][0] for k, owner in owners.items() if k in wanted and owner != diagnosis_id
        )
        if skipped:
            log.warning(
                "aliases already naming another diagnosis were not added to %s: %s",
                self.diagnosis(diagnosis_id).name,
                ", ".join(skipped),
            )
        return skipped

    def _knowledge(
        self, tail: str, params: list[Any], *, table: str = "knowledge"
    ) -> list[StoredKnowledge]:
        rows = self.con.execute(
            "SELECT d.id, d.name, d.category, k.version, k.record, k.source, k.provider, k.model, "
            "k.prompt_sha256, k.params, k.raw_response, k.pack_version, k.content_sha256, "
            "k.created_at, k.run_id, k.status, k.reviewed_at, k.review_note "
            f"FROM {table} k JOIN diagnoses d ON d.id = k.diagnosis_id " + tail,
            params,
        ).fetchall()
        return [
            StoredKnowledge(
                diagnosis=Diagnosis(r[0], r[1], r[2]),
                version=r[3],
                record=DiagnosisKnowledge.model_validate_json(r[4]),
                provenance=Provenance(
                    source=r[5],
                    provider=r[6],
                    model=r[7],
                    prompt_sha256=r[8],
                    params=json.loads(r[9]) if r[9] else {},
                    raw_response=r[10],
                    pack_version=r[11],
                ),
                content_sha256=r[12],
                created_at=r[13],
                run_id=r[14],
                status=r[15],
                reviewed_at=r[16],
                review_note=r[17],
            )
            for r in rows
        ]

    # -- failures and runs ---------------------------------------------------------------

    def record_failure(
        self,
        label: str,
        attempt: int,
        error_kind: str,
        message: str,
        *,
        raw_response: str | None = None,
        run_id: int | None = None,
    ) -> None:
        self.con.execute(
            "INSERT INTO generation_failures (run_id, label, attempt, error_kind, message, "
            "raw_response) VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, label, attempt, error_kind, message, raw_response],
        )

    def failures(self, run_id: int | None = None) -> list[Failure]:
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        rows = self.con.execute(
            "SELECT run_id, label, attempt, error_kind, message, raw_response, created_at "
            f"FROM generation_failures {where} ORDER BY id",
            params,
        ).fetchall()
        return [Failure(*r) for r in rows]

    def start_run(self, kind: str, params: dict[str, Any]) -> int:
        row = self.con.execute(
            "INSERT INTO runs (kind, status, params) VALUES (?, 'running', ?) RETURNING id",
            [kind, json.dumps(params, sort_keys=True)],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, summary = ?, finished_at = current_timestamp WHERE id = ?",
            [status, json.dumps(summary, sort_keys=True), run_id],
        )

    def runs(self) -> Iterator[dict[str, Any]]:
        cursor = self.con.execute(
            "SELECT id, kind, status, params, summary, started_at, finished_at "
            "FROM runs ORDER BY id"
        )
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            yield dict(zip(names, row, strict=True))

    def _mark_interrupted_runs(self) -> None:
        # We hold the only write lock, so a run still marked running died with its process.
        self.con.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = current_timestamp "
            "WHERE status = 'running'"
        )
