"""Unicode name keys: normalisation, and the migration that re-keys an older knowledge base."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from kb_store.aliases import lookup_plan, loose_keys
from kb_store.migrations import LATEST_VERSION, MIGRATIONS
from kb_store.store import KnowledgeBase
from knowledge.names import normalize_name
from tests.support.openai_server import valid_record


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Atrial  fibrillation.", "atrial fibrillation"),
        ("ATRIAL-fibrillation", "atrial fibrillation"),
        ("Ünïcødé", "ünïcødé"),
        ("心衰", "心衰"),
        ("Синусовая  ТАХИКАРДИЯ!", "синусовая тахикардия"),
        ("ＡＦＩＢ", "afib"),  # full-width letters (NFKC)
        ("Straße", "strasse"),  # casefold, not lower
        ("हृदय", "हृदय"),  # vowel signs are marks, kept
        (" \t ", ""),
    ],
)
def test_names_keep_letters_of_every_script(name: str, key: str) -> None:
    assert normalize_name(name) == key


def test_different_labels_never_share_a_key() -> None:
    labels = ["Ünïcødé", "unicode", "unicde", "心衰", "心悸", "тахикардия", "брадикардия"]
    assert len({normalize_name(label) for label in labels}) == len(labels)


def _schema_2_database(path: Path) -> None:
    """A knowledge base as ked wrote it before schema 3, with its ASCII-only keys."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR)")
    for version, description, sql in MIGRATIONS[:2]:
        assert isinstance(sql, str)
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, description])
    con.execute(
        "INSERT INTO diagnoses (name, name_key, category) VALUES "
        "('Ünïcødé block', 'unicde block', 'conduction'), ('心衰', '', 'other')"
    )
    con.execute(
        "INSERT INTO aliases VALUES ('name', 'unicde block', 'Ünïcødé block', 'name', 1), "
        "('name', 'ub', 'UB', 'label', 1)"
    )
    record = valid_record("心衰")
    record["synonyms"] = ["心力衰竭"]
    con.execute(
        "INSERT INTO knowledge (diagnosis_id, version, schema_version, record, content_sha256, "
        "source) VALUES (2, 1, 1, ?, 'x', 'manual')",
        [json.dumps(record)],
    )
    con.close()


def test_migration_rekeys_aliases_and_restores_names_in_other_scripts(db_path: Path) -> None:
    _schema_2_database(db_path)
    # migrated by a process that dies at once: the migration must survive without its log
    code = (
        "import os; from kb_store.store import KnowledgeBase; "
        f"kb = KnowledgeBase({str(db_path)!r}); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    with KnowledgeBase(db_path) as kb:
        assert kb.con.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
            LATEST_VERSION,
        )
        unicode, heart = kb.resolve("ÜNÏCØDÉ block"), kb.resolve("心衰")
        assert unicode is not None and unicode.id == 1
        assert heart is not None and heart.id == 2
        assert kb.resolve("心力衰竭") == heart and kb.resolve("ub") == unicode
        assert kb.resolve("unicde block") is None
        keys = kb.con.execute("SELECT name_key FROM diagnoses ORDER BY id").fetchall()
        assert keys == [("ünïcødé block",), ("心衰",)]
        stored = kb.current(2)
        assert stored is not None and stored.record.synonyms == ["心力衰竭"]
        # the rebuilt tables still hand out fresh ids and versions
        added = kb.add_knowledge(
            kb.current(2).record.model_copy(update={"caveats": ["new"]}),  # type: ignore[union-attr]
            stored.provenance,
        )
        assert added.diagnosis.id == 2 and added.version == 2


def test_plural_and_parenthetical_queries_resolve_after_exact_names_and_codes(
    kb_copy: Path,
) -> None:
    queries = [
        "premature atrial contractions",
        "PVCs",
        "old myocardial infarction (scar)",
        "SCP:AMI",
        "pericarditis of the heart (acute)",
    ]
    with KnowledgeBase(kb_copy, read_only=True) as kb:
        found = kb.resolve_many(queries)
        expected = {
            "premature atrial contractions": kb.resolve("premature atrial contraction"),
            "PVCs": kb.resolve("premature ventricular contraction"),
            "old myocardial infarction (scar)": kb.resolve("old myocardial infarction"),
            "SCP:AMI": kb.resolve("anterior myocardial infarction"),
            "pericarditis of the heart (acute)": None,  # looser keys, but never a guess
        }
    assert all(expected[q] is not None for q in queries[:4])
    assert found == expected
    assert lookup_plan("AFIB")[:2] == [(("name",), "afib"), (("snomed_ct", "scp_ecg"), "afib")]
    assert loose_keys("Q waves (pathological)") == ["q waves", "q wave pathological", "q wave"]
    assert loose_keys("stenosis") == [] and loose_keys("abnormalities") == ["abnormality"]
