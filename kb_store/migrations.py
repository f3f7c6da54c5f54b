"""Schema versions of the knowledge base and the migrations between them.

Each migration (SQL, or a function for what SQL cannot do) is applied once, in order, in its
own transaction, and recorded in ``schema_migrations``. A database written by a newer ked is
refused rather than guessed at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import duckdb
from pydantic import ValidationError

from kb_store.aliases import NAMES, record_aliases
from kb_store.connection import KnowledgeBaseError, transaction
from knowledge.names import normalize_name
from knowledge.schema import DiagnosisKnowledge

log = logging.getLogger(__name__)

# Tables that migration 3 rebuilds (DuckDB cannot update a key column of a referenced row).
_DIAGNOSES = """
    CREATE TABLE diagnoses (
        id INTEGER PRIMARY KEY DEFAULT nextval('diagnoses_id_seq'),
        name VARCHAR NOT NULL,
        name_key VARCHAR NOT NULL UNIQUE,
        category VARCHAR,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE aliases (
        namespace VARCHAR NOT NULL,
        alias_key VARCHAR NOT NULL,
        alias VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        diagnosis_id INTEGER NOT NULL REFERENCES diagnoses (id),
        PRIMARY KEY (namespace, alias_key)
    );
"""
_KNOWLEDGE = """
    CREATE TABLE knowledge (
        id INTEGER PRIMARY KEY DEFAULT nextval('knowledge_id_seq'),
        diagnosis_id INTEGER NOT NULL REFERENCES diagnoses (id),
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        record JSON NOT NULL,
        content_sha256 VARCHAR NOT NULL,
        source VARCHAR NOT NULL CHECK (source IN ('llm', 'curated', 'manual')),
        provider VARCHAR,
        model VARCHAR,
        prompt_sha256 VARCHAR,
        params JSON,
        raw_response VARCHAR,
        pack_version VARCHAR,
        run_id INTEGER,
        created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
        UNIQUE (diagnosis_id, version)
    );
    CREATE VIEW current_knowledge AS
        SELECT k.* FROM knowledge k
        WHERE k.version = (
            SELECT max(version) FROM knowledge WHERE diagnosis_id = k.diagnosis_id
        );
"""


def _rekey_names(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute name and alias keys with the Unicode-aware :func:`normalize_name`.

    Keys written before schema 3 dropped every non-ASCII letter, so names in other scripts
    had empty keys and were never stored as aliases: they are re-derived from each
    diagnosis's name and current record. Two diagnoses whose names now share a key stop the
    migration (nothing is changed); an alias that two diagnoses now claim stays with the first.
    """
    diagnoses = con.execute(
        "SELECT id, name, category, created_at FROM diagnoses ORDER BY id"
    ).fetchall()
    if not diagnoses:
        return  # a new knowledge base: nothing to re-key
    owner_of_key: dict[str, str] = {}
    for _, name, _, _ in diagnoses:
        key = normalize_name(name)
        if key in owner_of_key:
            raise KnowledgeBaseError(
                f"diagnoses {owner_of_key[key]!r} and {name!r} have the same name key {key!r}; "
                "rename one with an older ked before upgrading"
            )
        owner_of_key[key] = name
    candidates: list[tuple[str, str, str, int]] = con.execute(
        "SELECT namespace, alias, kind, diagnosis_id FROM aliases "
        "ORDER BY kind <> 'name', diagnosis_id, alias"
    ).fetchall()
    candidates += [(NAMES, name, "name", diagnosis_id) for diagnosis_id, name, _, _ in diagnoses]
    for diagnosis_id, record in con.execute(
        "SELECT diagnosis_id, record FROM current_knowledge ORDER BY diagnosis_id"
    ).fetchall():
        try:
            parsed = DiagnosisKnowledge.model_validate_json(record)
        except ValidationError:
            log.warning(
                "diagnosis %d: stored record no longer validates; aliases kept", diagnosis_id
            )
            continue
        candidates += [
            (ns, alias, kind, diagnosis_id) for ns, alias, kind in record_aliases(parsed)
        ]
    aliases: dict[tuple[str, str], tuple[str, str, int]] = {}
    for namespace, alias, kind, diagnosis_id in candidates:
        key = normalize_name(alias)
        kept = aliases.setdefault((namespace, key), (alias, kind, diagnosis_id))
        if key and kept[2] != diagnosis_id:
            log.info("alias %r shares its key with %r, which keeps it", alias, kept[0])
    con.execute("CREATE TEMP TABLE knowledge_copy AS SELECT * FROM knowledge")
    con.execute("DROP VIEW current_knowledge; DROP TABLE knowledge; DROP TABLE aliases")
    con.execute("DROP TABLE diagnoses")
    con.execute(_DIAGNOSES + _KNOWLEDGE)
    if diagnoses:
        con.executemany(
            "INSERT INTO diagnoses (id, name, name_key, category, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [[i, name, normalize_name(name), category, at] for i, name, category, at in diagnoses],
        )
    rows = [[ns, key, alias, kind, d] for (ns, key), (alias, kind, d) in aliases.items() if key]
    if rows:
        con.executemany(
            "INSERT INTO aliases (namespace, alias_key, alias, kind, diagnosis_id) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    con.execute("INSERT INTO knowledge SELECT * FROM knowledge_copy; DROP TABLE knowledge_copy")


MIGRATIONS: tuple[tuple[int, str, str | Callable[[duckdb.DuckDBPyConnection], None]], ...] = (
    (
        1,
        "diagnoses, aliases, versioned knowledge records, failures and runs",
        """
        CREATE SEQUENCE diagnoses_id_seq START 1;
        """
        + _DIAGNOSES
        + """
        CREATE SEQUENCE runs_id_seq START 1;
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY DEFAULT nextval('runs_id_seq'),
            kind VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            params JSON,
            summary JSON,
            started_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            finished_at TIMESTAMPTZ
        );
        CREATE SEQUENCE knowledge_id_seq START 1;
        """
        + _KNOWLEDGE
        + """
        CREATE SEQUENCE failures_id_seq START 1;
        CREATE TABLE generation_failures (
            id INTEGER PRIMARY KEY DEFAULT nextval('failures_id_seq'),
            run_id INTEGER,
            label VARCHAR NOT NULL,
            attempt INTEGER NOT NULL,
            error_kind VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            raw_response VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        );
        """,
    ),
    (
        2,
        "content-addressed text-embedding cache",
        """
        CREATE TABLE text_encoders (
            fingerprint VARCHAR PRIMARY KEY,
            spec JSON NOT NULL,
            dim INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE texts (
            text_sha256 VARCHAR PRIMARY KEY,
            text VARCHAR NOT NULL
        );
        CREATE TABLE embeddings (
            text_sha256 VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,
            vector FLOAT[] NOT NULL,
            vector_sha256 VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (text_sha256, fingerprint)
        );
        CREATE TABLE file_digests (
            path VARCHAR NOT NULL,
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            sha256 VARCHAR NOT NULL,
            PRIMARY KEY (path, size, mtime_ns)
        );
        """,
    ),
    (3, "Unicode-aware name and alias keys (NFKC, casefold, every script)", _rekey_names),
    (
        4,
        "review status of each knowledge version (curated accepted, others proposed)",
        """
        ALTER TABLE knowledge ADD COLUMN status VARCHAR DEFAULT 'proposed';
        ALTER TABLE knowledge ADD COLUMN reviewed_at TIMESTAMPTZ;
        ALTER TABLE knowledge ADD COLUMN review_note VARCHAR;
        UPDATE knowledge SET status = CASE WHEN source = 'curated' THEN 'accepted'
            ELSE 'proposed' END;
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of an open database (0 for an empty file)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the database up to :data:`LATEST_VERSION`; return the version it had."""
    before = current_version(con)
    if before > LATEST_VERSION:
        raise KnowledgeBaseError(
            f"the knowledge base has schema version {before}, newer than this ked "
            f"understands ({LATEST_VERSION}); upgrade ked"
        )
    if before == 0:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
        )
    for version, description, step in MIGRATIONS:
        if version <= before:
            continue
        with transaction(con):
            if callable(step):
                step(con)
            else:
                con.execute(step)
            con.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                [version, description],
            )
        log.info("knowledge base migrated to schema version %d: %s", version, description)
    if before < LATEST_VERSION:
        # DuckDB cannot replay a write-ahead log that drops a table holding a foreign key
        # without downloading an extension: write the migrated schema into the file now.
        con.execute("CHECKPOINT")
    return before


def require_current(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Refuse a read-only database whose schema is not the current one."""
    version = current_version(con)
    if version != LATEST_VERSION:
        raise KnowledgeBaseError(
            f"knowledge base {path} has schema version {version}, ked needs "
            f"{LATEST_VERSION}; open it once for writing (any 'ked' write command) to migrate"
        )
