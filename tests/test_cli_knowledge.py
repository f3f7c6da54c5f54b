"""The knowledge commands as a user runs them: real processes, real HTTP, real DuckDB files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kb_store.store import KnowledgeBase, Provenance
from knowledge.schema import DiagnosisKnowledge
from tests.support.openai_server import (
    LoopbackOpenAI,
    Reply,
    Request,
    answer,
    llama_cpp,
    valid_record,
)


def ked(
    *args: str, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KED_"))}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "ked", *args], capture_output=True, text=True, env=full_env
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def llm_env(server: LoopbackOpenAI, db: Path) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-cli", "KED_DB": str(db)}


def test_generate_command_accounts_for_every_label_and_exit_codes(db_path: Path) -> None:
    def script(request: Request) -> Reply:
        return (
            Reply(401, error="bad key") if request.label == "test broken" else answer(request.label)
        )

    with LoopbackOpenAI(script) as server:
        ok = ked("knowledge", "generate", "test a", "test b", env=llm_env(server, db_path))
        assert ok.returncode == 0, ok.stderr
        assert "stored     test a: test a v1\nstored     test b: test b v1\n" in ok.stdout
        assert "stored 2, already present 0, duplicates 0, failed 0; 2 requests" in ok.stdout
        assert "300 tokens" in ok.stdout and "output mode: json_schema\n" in ok.stdout
        args = ("knowledge", "generate", "test a", "test broken", "TEST-A", "心衰")
        bad = ked(*args, env=llm_env(server, db_path))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert lines[:4] == [
        "present    test a: test a",
        "failed     test broken: http_401: AuthenticationError: Error code: 401 - bad key",
        "duplicate  TEST-A: same as 'test a'",
        "stored     心衰: 心衰 v1",
    ]
    assert "stored 1, already present 1, duplicates 1, failed 1" in bad.stdout
    assert "1 of 4 labels failed (details: 'ked kb failures --run 2')" in bad.stderr
    failures = ked("kb", "failures", "--json", env={"KED_DB": str(db_path)}, check=True)
    assert json.loads(failures.stdout)[0]["error_kind"] == "http_401"


def test_generate_prints_the_output_mode_a_llama_cpp_server_ended_with(db_path: Path) -> None:
    with LoopbackOpenAI(llama_cpp) as server:
        args = ("test a", "test b", "--max-tokens", "700", "--prompt", "compact")
        result = ked("knowledge", "generate", *args, env=llm_env(server, db_path))
        requests = server.requests
    assert result.returncode == 0, result.stderr
    assert [r.response_format for r in requests] == ["json_schema", "json_object", "json_object"]
    assert all(r.body["max_tokens"] == 700 for r in requests)
    assert "Fields of the record" in requests[0].body["messages"][0]["content"]
    mode = result.stdout.splitlines()[-1]
    assert mode.startswith("output mode: json_object (after json_schema refused, HTTP 500: ")
    assert "response_format" in mode


def test_blank_labels_are_a_usage_error_before_any_request(db_path: Path) -> None:
    with LoopbackOpenAI() as server:
        result = ked("knowledge", "generate", "test a", "  ", env=llm_env(server, db_path))
        assert server.requests == []
    assert result.returncode == 2
    assert "blank label '  '" in result.stderr and "Traceback" not in result.stderr


def test_verbose_logs_and_output_never_show_credentials_of_the_base_url(db_path: Path) -> None:
    password, query_key = "url-pass-5e6f7a8b", "query-key-1a2b3c4d"
    with LoopbackOpenAI() as server:
        url = server.base_url.replace("http://", f"http://user:{password}@")
        env = {**llm_env(server, db_path), "OPENAI_BASE_URL": f"{url}?key={query_key}"}
        result = ked("-v", "-v", "knowledge", "generate", "test a", env=env)
        assert server.requests[0].path.endswith(f"?key={query_key}")
    assert result.returncode == 0, result.stderr
    assert "DEBUG openai" in result.stderr and "INFO httpx" in result.stderr
    output = result.stdout + result.stderr
    assert password not in output and query_key not in output and "sk-cli" not in output


def test_generate_without_provider_is_a_clear_error(tmp_path: Path) -> None:
    result = ked(
        "--db", str(tmp_path / "kb.duckdb"), "knowledge", "generate", "atrial fibrillation"
    )
    assert result.returncode == 2
    assert "no LLM provider configured" in result.stderr and "Traceback" not in result.stderr


def test_killed_run_resumes_without_duplicates_or_partial_rows(db_path: Path) -> None:
    labels = [f"test diagnosis {i:02d}" for i in range(20)]
    with LoopbackOpenAI(latency_s=0.2) as server:
        env = llm_env(server, db_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ked", "knowledge", "generate", *labels, "--concurrency", "2"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while server.served < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert server.served < len(labels), "the run finished before it could be killed"

        with KnowledgeBase(db_path) as kb:
            stored = kb.con.execute(
                "SELECT d.name, count(k.id), count(DISTINCT a.alias_key) FROM diagnoses d "
                "LEFT JOIN knowledge k ON k.diagnosis_id = d.id "
                "LEFT JOIN aliases a ON a.diagnosis_id = d.id GROUP BY d.name"
            ).fetchall()
            statuses = [r["status"] for r in kb.runs()]
        assert statuses == ["interrupted"]
        assert 0 < len(stored) < len(labels)
        # every diagnosis that exists is complete: one record and its aliases
        assert all(count == 1 and aliases >= 1 for _, count, aliases in stored)

        requests_before = len(server.requests)
        result = ked("knowledge", "generate", *labels, env=env)
        assert result.returncode == 0, result.stderr
        assert len(server.requests) - requests_before == len(labels) - len(stored)
        assert f"already present {len(stored)}," in result.stdout

    with KnowledgeBase(db_path, read_only=True) as kb:
        rows = kb.con.execute(
            "SELECT diagnosis_id, count(*) FROM knowledge GROUP BY diagnosis_id"
        ).fetchall()
        assert len(rows) == len(labels) and all(count == 1 for _, count in rows)


def test_second_writer_gets_a_clear_error_naming_the_file(db_path: Path) -> None:
    KnowledgeBase(db_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kb_store.store import KnowledgeBase; "
            f"kb = KnowledgeBase({str(db_path)!r}); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        for args in (["knowledge", "import-pack"], ["kb", "list"]):
            result = ked("--db", str(db_path), *args)
            assert result.returncode == 2
            assert f"knowledge base {db_path} is locked by process {holder.pid}" in result.stderr
            assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def _record(name: str) -> DiagnosisKnowledge:
    return DiagnosisKnowledge.model_validate(valid_record(name))


def test_export_import_round_trip_is_validated_and_idempotent(tmp_path: Path) -> None:
    source, target = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    with KnowledgeBase(source) as kb:
        kb.add_knowledge(_record("test one"), Provenance(source="manual"))
        kb.add_knowledge(_record("test two"), Provenance(source="curated", pack_version="x"))
        changed = _record("test two").model_copy(update={"caveats": ["a newer caveat"]})
        kb.add_knowledge(changed, Provenance(source="manual"))
    out = tmp_path / "kb.jsonl"
    ked("--db", str(source), "kb", "export", "--out", str(out), "--all-versions", check=True)
    assert len(out.read_text().splitlines()) == 3

    first = ked("--db", str(target), "kb", "import", str(out), check=True)
    assert "imported 3 records, 0 unchanged" in first.stdout
    again = ked("--db", str(target), "kb", "import", str(out), check=True)
    assert "imported 0 records, 3 unchanged" in again.stdout
    shown = json.loads(
        ked("--db", str(target), "kb", "show", "TEST TWO", "--json", "--history").stdout
    )
    assert [k["version"] for k in shown["knowledge"]] == [1, 2]
    assert shown["knowledge"][1]["record"]["caveats"] == ["a newer caveat"]
    with KnowledgeBase(source, read_only=True) as a, KnowledgeBase(target, read_only=True) as b:
        assert [s.content_sha256 for s in a.all_knowledge(all_versions=True)] == [
            s.content_sha256 for s in b.all_knowledge(all_versions=True)
        ]

    bad = tmp_path / "bad.jsonl"
    broken = json.loads(out.read_text().splitlines()[0])
    broken["record"]["leads"] = ["V8"]
    bad.write_text(out.read_text().splitlines()[0] + "\n" + json.dumps(broken) + "\n")
    fresh = tmp_path / "c.duckdb"
    result = ked("--db", str(fresh), "kb", "import", str(bad))
    assert result.returncode == 2 and f"{bad}:2" in result.stderr and "V8" in result.stderr
    with KnowledgeBase(fresh, read_only=True) as kb:
        assert kb.diagnoses() == []  # validated before anything was written
