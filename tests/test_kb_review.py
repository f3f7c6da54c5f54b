"""Review before trust: knowledge statuses, their migration, the setting and its consumers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from encoders.text import label_entries, view_texts
from kb_store import migrations
from kb_store.connection import KnowledgeBaseError
from kb_store.jsonl import ImportFileError, export_jsonl, import_jsonl
from kb_store.store import KnowledgeBase, Provenance, UnknownVersionError
from ked.config import InvalidSettingError, Settings
from knowledge.curated import load_pack
from knowledge.schema import DiagnosisKnowledge
from knowledge.views import render_view
from tests.support.cli import run_ked
from tests.support.openai_server import LoopbackOpenAI, Reply, Request, answer

AF = load_pack().resolve("atrial fibrillation")
assert AF is not None


def llm_af() -> dict[str, Any]:
    """What the LLM says about atrial fibrillation: a regular rhythm, against the pack."""
    data = AF.model_dump(mode="json")
    data["rhythm"]["regularity"] = "regular"
    data["caveats"] = [*data["caveats"], "written by the loopback LLM"]
    return data


def write_v3_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A knowledge base as ked with schema 3 wrote it: a curated and an LLM version."""
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        m.setattr(migrations, "LATEST_VERSION", 3)
        con = duckdb.connect(str(path))
        migrations.migrate(con)
        con.execute("INSERT INTO diagnoses (name, name_key) VALUES ('atrial fibrillation', 'af')")
        insert = (
            "INSERT INTO knowledge (diagnosis_id, version, schema_version, record, "
            "content_sha256, source) VALUES (1, ?, 1, ?, ?, ?)"
        )
        con.execute(insert, [1, AF.model_dump_json(), "a", "curated"])
        con.execute(insert, [2, json.dumps(llm_af()), "b", "llm"])
        con.close()


def test_a_schema_3_file_migrates_with_curated_accepted_and_llm_proposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v3.duckdb"
    write_v3_file(path, monkeypatch)
    with pytest.raises(KnowledgeBaseError, match="schema version 3, ked needs 4"):
        KnowledgeBase(path, read_only=True)
    with KnowledgeBase(path) as kb:
        assert [(s.version, s.status) for s in kb.history(1)] == [(1, "accepted"), (2, "proposed")]
        assert kb.current(1).version == 2  # type: ignore[union-attr]
        assert kb.usable(1).version == 1  # type: ignore[union-attr]
    with KnowledgeBase(path, read_only=True) as kb:  # migrated once, readable since
        assert kb.latest_statuses() == {1: "proposed"}


def test_status_follows_the_source_and_review_changes_what_is_usable(db_path: Path) -> None:
    with KnowledgeBase(db_path) as kb:
        first = kb.add_knowledge(AF, Provenance("curated", pack_version="1"))
        second = kb.add_knowledge(DiagnosisKnowledge.model_validate(llm_af()), Provenance("llm"))
        manual = AF.model_copy(update={"caveats": ["typed in by hand"]})
        kb.add_knowledge(manual, Provenance("manual"))
        af = first.diagnosis.id
        assert [s.status for s in kb.history(af)] == ["accepted", "proposed", "proposed"]
        assert kb.usable(af).version == 1  # type: ignore[union-attr]
        assert [s.version for s in kb.by_status("proposed")] == [2, 3]

        accepted = kb.set_status(af, "accepted", version=second.version, note="checked")
        assert (accepted.status, accepted.review_note) == ("accepted", "checked")
        assert accepted.reviewed_at is not None
        assert kb.usable(af).version == 2  # type: ignore[union-attr]
        kb.set_status(af, "rejected")  # the latest, v3
        kb.set_status(af, "rejected", version=2)
        assert kb.usable(af).version == 1  # type: ignore[union-attr]
        assert kb.current(af).version == 3  # type: ignore[union-attr]
        with pytest.raises(UnknownVersionError, match="has no version 9"):
            kb.set_status(af, "accepted", version=9)
    with KnowledgeBase(db_path, usable=["accepted", "rejected"]) as kb:
        assert kb.usable(af).version == 3  # type: ignore[union-attr]
        assert [s.version for s in kb.all_usable()] == [3]


def test_reviews_travel_with_an_export_and_apply_to_what_the_import_adds(
    tmp_path: Path,
) -> None:
    source, target, out = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "kb.jsonl"
    with KnowledgeBase(source) as kb:
        af = kb.add_knowledge(AF, Provenance("curated", pack_version="1")).diagnosis.id
        kb.add_knowledge(DiagnosisKnowledge.model_validate(llm_af()), Provenance("llm"))
        manual = kb.add_knowledge(
            AF.model_copy(update={"caveats": ["by hand"]}), Provenance("manual")
        )
        rejected = kb.set_status(af, "rejected", version=2, note="AF is irregular")
        kb.set_status(af, "accepted", version=manual.version)
        export_jsonl(kb, out, all_versions=True)
    with KnowledgeBase(target) as kb:
        assert import_jsonl(kb, out).added == 3
        versions = kb.history(kb.named("atrial fibrillation").id)
        assert [v.status for v in versions] == ["accepted", "rejected", "accepted"]
        assert versions[0].reviewed_at is None  # curated: accepted by its source, not reviewed
        assert (versions[1].review_note, versions[1].reviewed_at) == (
            "AF is irregular",
            rejected.reviewed_at,
        )
        kb.set_status(versions[2].diagnosis.id, "proposed", version=3)
        assert import_jsonl(kb, out).added == 0  # stored versions keep the review they have here
        assert kb.version(versions[2].diagnosis.id, 3).status == "proposed"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    lines[1]["review"] = {"status": "approved"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with (
        KnowledgeBase(tmp_path / "c.duckdb") as kb,
        pytest.raises(ImportFileError, match=r":2: review\.status"),
    ):
        import_jsonl(kb, bad)


def test_the_setting_defaults_to_accepted_and_comes_from_flag_or_environment() -> None:
    assert Settings.resolve(env={}).knowledge_statuses == ("accepted",)
    env = {"KED_USE_KNOWLEDGE": "Proposed, accepted"}
    assert Settings.resolve(env=env).knowledge_statuses == ("accepted", "proposed")
    flag = Settings.resolve(knowledge_statuses=["rejected"], env=env)
    assert flag.knowledge_statuses == ("rejected",)
    with pytest.raises(InvalidSettingError, match="unknown knowledge status trusted"):
        Settings.resolve(env={"KED_USE_KNOWLEDGE": "accepted,trusted"})


def af_responder(request: Request) -> Reply:
    if request.label == "atrial fibrillation":
        return Reply(content=json.dumps(llm_af()))
    return answer(request.label)


def generate_af(
    kb: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regenerate atrial fibrillation's knowledge with the (loopback) LLM: version 2."""
    with LoopbackOpenAI(af_responder) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-review")
        code, _, err = run_ked(
            capsys, "--db", str(kb), "knowledge", "generate", "atrial fibrillation", "--force"
        )
    assert code == 0, err


def test_cli_review_accept_and_reject(
    kb_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_af(kb_copy, capsys, monkeypatch)
    db = ("--db", str(kb_copy))
    code, out, _ = run_ked(capsys, *db, "kb", "list")
    assert any(
        line.split()[1:4] == ["atrial", "fibrillation", "rhythm"]
        and line.endswith("v2 llm proposed")
        for line in out.splitlines()
    )

    code, out, _ = run_ked(capsys, *db, "kb", "review")
    [waiting] = [line for line in out.splitlines() if line.startswith("atrial fibrillation")]
    assert "v2" in waiting and "llm" in waiting and "1 contradictions, 0 deviations" in waiting
    assert "1 versions wait for review" in out
    code, out, _ = run_ked(capsys, *db, "kb", "review", "--json")
    assert [(r["name"], r["contradictions"]) for r in json.loads(out)] == [
        ("atrial fibrillation", 1)
    ]

    code, out, _ = run_ked(capsys, *db, "kb", "accept", "AFIB")
    assert code == 0 and out.startswith("atrial fibrillation v2: accepted;")
    assert "now use v2 (accepted knowledge)" in out
    code, out, _ = run_ked(capsys, *db, "kb", "review")
    assert out.startswith("0 versions wait for review")

    code, out, _ = run_ked(
        capsys, *db, "kb", "reject", "AFIB", "--version", "2", "--note", "AF is irregular"
    )
    assert "v2: rejected; embeddings, training and zero-shot now use v1" in out
    code, out, _ = run_ked(capsys, *db, "kb", "show", "AFIB", "--history")
    assert "UTC, accepted\n" in out and "UTC, rejected (AF is irregular)" in out

    code, _, err = run_ked(capsys, *db, "kb", "accept", "no such thing")
    assert code == 2 and err.strip() == "error: no diagnosis named 'no such thing'"
    code, _, err = run_ked(capsys, *db, "--use-knowledge", "everything", "kb", "accept", "AFIB")
    assert code == 2 and "unknown knowledge status everything" in err


@pytest.mark.slow  # loads the real text model twice (about 15 s)
def test_consumers_use_only_the_allowed_statuses(
    kb_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_af(kb_copy, capsys, monkeypatch)
    curated_text = render_view(AF, "full")
    llm_text = render_view(DiagnosisKnowledge.model_validate(llm_af()), "full")
    assert curated_text != llm_text

    def full_text(**usable: Any) -> str:
        with KnowledgeBase(kb_copy, **usable) as kb:
            entries = label_entries(kb, labels=["atrial fibrillation"])
            return view_texts(kb, entries, ["full"])["full"][0]

    assert full_text() == curated_text  # the safe default: accepted only
    assert full_text(usable=["accepted", "proposed"]) == llm_text

    # The command line: embedding caches the text of the version the setting allows.
    db = ("--db", str(kb_copy))
    embed = ("embed", "atrial fibrillation", "--view", "full")
    code, _, err = run_ked(capsys, *db, *embed)
    assert code == 0, err
    assert cached_texts(kb_copy) >= {curated_text} and llm_text not in cached_texts(kb_copy)
    monkeypatch.setenv("KED_USE_KNOWLEDGE", "accepted,proposed")
    code, _, err = run_ked(capsys, *db, *embed)
    assert code == 0, err
    assert llm_text in cached_texts(kb_copy)

    # Only proposed knowledge allowed: curated diagnoses have none, a one-line error says so.
    code, _, err = run_ked(capsys, *db, "--use-knowledge", "proposed", "embed", "sinus rhythm")
    assert code == 2 and "no proposed knowledge for 1 labels: sinus rhythm" in err


def cached_texts(db: Path) -> set[str]:
    with KnowledgeBase(db, read_only=True) as kb:
        return {row[0] for row in kb.con.execute("SELECT text FROM texts").fetchall()}


@pytest.mark.slow  # imports torch and reads the sample's manifest (about 10 s)
def test_training_uses_only_the_allowed_statuses(
    kb_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ked pretrain` resolves the setting too: with only proposed knowledge allowed, the
    curated diagnoses have none and it stops before training, naming them."""
    args = ("--db", str(kb_copy), "--use-knowledge", "proposed", "pretrain", "--data", "sample")
    labels = ("--labels", "sinus rhythm", "--labels", "AFIB", "--out", str(tmp_path / "run"))
    code, _, err = run_ked(capsys, *args, *labels, "--epochs", "1")
    assert code == 2
    assert "no proposed knowledge for 2 labels: sinus rhythm, AFIB" in err
    assert not (tmp_path / "run").exists()
