"""Knowledge generation against a loopback OpenAI server: real HTTP, real client, real DuckDB."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kb_store.store import KnowledgeBase
from knowledge.generate import GenerationSummary, LabelError, generate_knowledge
from knowledge.llm import KnowledgeClient, LLMSettings, OutputMode
from knowledge.prompting import KnowledgePrompts
from tests.support.openai_server import (
    LoopbackOpenAI,
    Reply,
    Request,
    answer,
    llama_cpp,
    llama_cpp_context_error,
    valid_record,
)

SECRET = "sk-test-9f8e7d6c5b4a-never-store-me"


def settings(server: LoopbackOpenAI, **overrides: object) -> LLMSettings:
    values: dict[str, object] = {
        "model": "loopback-model",
        "base_url": server.base_url,
        "timeout_s": 2.0,
        "max_retries": 3,
        "max_repairs": 2,
        "backoff_s": 0.01,
        "retry_max_wait_s": 5.0,
    }
    values.update(overrides)
    return LLMSettings(**values)  # type: ignore[arg-type]


def run(
    db: Path,
    server: LoopbackOpenAI,
    labels: Sequence[str],
    *,
    force: bool = False,
    **overrides: object,
) -> GenerationSummary:
    async def go() -> GenerationSummary:
        client = KnowledgeClient(settings(server, **overrides), api_key=SECRET)
        try:
            with KnowledgeBase(db) as kb:
                return await generate_knowledge(kb, client, labels, force=force)
        finally:
            await client.aclose()

    return asyncio.run(go())


def scripted(script: Callable[[Request], Reply | None]) -> Callable[[Request], Reply]:
    """A responder that answers validly unless ``script`` returns a reply."""
    return lambda request: script(request) or answer(request.label)


def test_generates_valid_records_with_provenance_and_usage(db_path: Path) -> None:
    labels = ["test diagnosis a", "test diagnosis b", "test diagnosis c"]
    with LoopbackOpenAI() as server:
        summary = run(db_path, server, labels)
    assert sorted(summary.generated) == labels and summary.ok
    assert len(server.requests) == 3 and summary.requests == 3
    assert summary.prompt_tokens == 300 and summary.completion_tokens == 150
    assert all(r.response_format == "json_schema" for r in server.requests)
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    with KnowledgeBase(db_path, read_only=True) as kb:
        diagnosis = kb.resolve("Test Diagnosis A!")
        assert diagnosis is not None
        stored = kb.current(diagnosis.id)
        assert stored is not None and stored.version == 1
        prov = stored.provenance
        assert prov.source == "llm" and prov.model == "loopback-model"
        assert prov.provider == "127.0.0.1" and len(prov.prompt_sha256 or "") == 64
        assert prov.params["output_mode"] == "json_schema"
        assert json.loads(prov.raw_response or "")["name"] == "test diagnosis a"
        assert [r["status"] for r in kb.runs()] == ["completed"]


def test_rerun_sends_no_request_and_force_makes_a_new_version(db_path: Path) -> None:
    labels = ["test diagnosis a", "test diagnosis b"]
    with LoopbackOpenAI() as server:
        run(db_path, server, labels)
        again = run(db_path, server, [*labels, "TEST-diagnosis a"])
        assert len(server.requests) == 2
        assert sorted(again.skipped) == labels and not again.generated
        assert [(r.status, r.detail) for r in again.results] == [
            ("present", "test diagnosis a"),
            ("present", "test diagnosis b"),
            ("duplicate", "same as 'test diagnosis a'"),
        ]
        forced = run(db_path, server, labels[:1], force=True)
        assert forced.generated == labels[:1] and len(server.requests) == 3
    with KnowledgeBase(db_path, read_only=True) as kb:
        diagnosis = kb.resolve(labels[0])
        assert diagnosis is not None
        assert [s.version for s in kb.history(diagnosis.id)] == [1, 2]


def test_429_is_retried_after_retry_after(db_path: Path) -> None:
    def script(request: Request) -> Reply | None:
        if request.nth == 1:
            return Reply(429, error="slow down", headers={"Retry-After": "0.4"})
        return None

    with LoopbackOpenAI(scripted(script)) as server:
        started = time.perf_counter()
        summary = run(db_path, server, ["test diagnosis a"])
        elapsed = time.perf_counter() - started
    assert summary.ok and summary.retries == 1 and len(server.requests) == 2
    assert elapsed >= 0.4  # the server's Retry-After, not our 10 ms backoff


def test_server_errors_and_stalls_are_retried(db_path: Path) -> None:
    def script(request: Request) -> Reply | None:
        if request.label == "test 500" and request.nth <= 2:
            return Reply(500, error="boom")
        if request.label == "test stall" and request.nth == 1:
            return Reply(delay_s=3.0)  # past the 0.5 s timeout
        return None

    with LoopbackOpenAI(scripted(script)) as server:
        summary = run(db_path, server, ["test 500", "test stall"], timeout_s=0.5)
    assert summary.ok
    assert len(server.requests_for("test 500")) == 3
    assert len(server.requests_for("test stall")) == 2


def test_persistent_errors_fail_after_max_retries_and_are_recorded(db_path: Path) -> None:
    with LoopbackOpenAI(lambda r: Reply(503, error="unavailable")) as server:
        summary = run(db_path, server, ["test down"], max_retries=2)
    assert summary.failed == ["test down"] and len(server.requests) == 3
    with KnowledgeBase(db_path, read_only=True) as kb:
        (failure,) = kb.failures(summary.run_id)
        assert failure.error_kind == "server_error" and "unavailable" in failure.message
        assert kb.resolve("test down") is None
        assert [r["status"] for r in kb.runs()] == ["completed_with_failures"]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(db_path: Path, status: int) -> None:
    with LoopbackOpenAI(lambda r: Reply(status, error="no")) as server:
        summary = run(db_path, server, ["test refused"])
    assert summary.failed == ["test refused"] and len(server.requests) == 1
    with KnowledgeBase(db_path, read_only=True) as kb:
        assert kb.failures()[0].error_kind == f"http_{status}"


def test_malformed_json_is_repaired(db_path: Path) -> None:
    def script(request: Request) -> Reply | None:
        return (
            Reply(content='{"name": "test diagnosis a", "category": ') if request.nth == 1 else None
        )

    with LoopbackOpenAI(scripted(script)) as server:
        summary = run(db_path, server, ["test diagnosis a"])
    assert summary.ok and len(server.requests) == 2
    repair = server.requests[1]
    assert "no JSON object" in repair.last_user_message
    assert repair.body["messages"][-2]["role"] == "assistant"


def test_schema_violation_is_fed_back_and_repaired(db_path: Path) -> None:
    def script(request: Request) -> Reply | None:
        if request.nth == 1:
            record = valid_record(request.label)
            record["morphology"]["qrs_complex"]["duration_ms"] = {"min": 5, "max": 9}
            record["leads"] = ["II", "V9"]
            return Reply(content="Here is the record:\n```json\n" + json.dumps(record) + "\n```")
        return None

    with LoopbackOpenAI(scripted(script)) as server:
        summary = run(db_path, server, ["test diagnosis a"])
    assert summary.ok and len(server.requests) == 2
    feedback = server.requests[1].last_user_message
    assert "morphology.qrs_complex" in feedback and "V9" in feedback
    with KnowledgeBase(db_path, read_only=True) as kb:
        diagnosis = kb.resolve("test diagnosis a")
        assert diagnosis is not None
        stored = kb.current(diagnosis.id)
        assert stored is not None and stored.provenance.params["repairs"] == 1


def test_invalid_output_after_all_repairs_is_a_recorded_failure(db_path: Path) -> None:
    with LoopbackOpenAI(lambda r: Reply(content="I am not sure.")) as server:
        summary = run(db_path, server, ["test hopeless"], max_repairs=1)
    assert summary.failed == ["test hopeless"] and len(server.requests) == 2
    with KnowledgeBase(db_path, read_only=True) as kb:
        (failure,) = kb.failures()
        assert failure.error_kind == "invalid_output" and failure.attempt == 2
        assert failure.raw_response == "I am not sure."


def test_refusal_is_recorded(db_path: Path) -> None:
    with LoopbackOpenAI(lambda r: Reply(refusal="I can't help with that.")) as server:
        summary = run(db_path, server, ["test refusal"])
    assert summary.failed == ["test refusal"] and len(server.requests) == 1
    with KnowledgeBase(db_path, read_only=True) as kb:
        assert kb.failures()[0].error_kind == "refusal"


def test_falls_back_to_json_mode_then_text_for_servers_without_structured_output(
    db_path: Path,
) -> None:
    def no_structured_output(request: Request) -> Reply:
        if request.response_format != "none":
            return Reply(400, error=f"response_format {request.response_format} is not supported")
        prose = "Sure! " + json.dumps(valid_record(request.label)) + " Hope this helps."
        return Reply(content=prose)

    with LoopbackOpenAI(no_structured_output) as server:
        summary = run(db_path, server, ["test a", "test b"], concurrency=1)
    assert summary.ok
    formats = [r.response_format for r in server.requests]
    # the first label discovers the server's limits; the second goes straight to text
    assert formats == ["json_schema", "json_object", "none", "none"]


def test_json_mode_server(db_path: Path) -> None:
    def json_mode_only(request: Request) -> Reply | None:
        if request.response_format == "json_schema":
            return Reply(400, error="Unknown response_format type json_schema")
        return None

    async def go() -> OutputMode:
        client = KnowledgeClient(settings(server), api_key=None)
        with KnowledgeBase(db_path) as kb:
            await generate_knowledge(kb, client, ["test a"])
        await client.aclose()
        return client.mode

    with LoopbackOpenAI(scripted(json_mode_only)) as server:
        assert asyncio.run(go()) is OutputMode.JSON_OBJECT
        assert server.requests[0].headers["authorization"] == "Bearer not-needed"


def test_concurrency_is_bounded(db_path: Path) -> None:
    lock = threading.Lock()
    in_flight = peak = 0

    def slow(request: Request) -> Reply:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.1)
        with lock:
            in_flight -= 1
        return answer(request.label)

    labels = [f"test diagnosis {i}" for i in range(12)]
    with LoopbackOpenAI(slow) as server:
        summary = run(db_path, server, labels, concurrency=3)
    assert summary.ok and peak == 3


def test_api_key_never_reaches_database_or_logs(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def echo_key(request: Request) -> Reply:
        key = request.headers["authorization"]
        if request.label == "test leak":
            return Reply(401, error=f"Incorrect API key provided: {key}")
        return Reply(content=f"key {key} " + json.dumps(valid_record(request.label)))

    caplog.set_level(logging.DEBUG)
    with LoopbackOpenAI(echo_key) as server:
        summary = run(db_path, server, ["test leak", "test echo"])
    assert summary.failed == ["test leak"] and summary.generated == ["test echo"]
    assert SECRET not in caplog.text
    with KnowledgeBase(db_path, read_only=True) as kb:
        assert "[redacted]" in kb.failures()[0].message
        tables = [t for (t,) in kb.con.execute("SHOW TABLES").fetchall()]
        for table in tables:
            dump = str(kb.con.execute(f"SELECT * FROM {table}").fetchall())
            assert SECRET not in dump, table
        assert "key Bearer [redacted]" in str(
            kb.con.execute("SELECT raw_response FROM knowledge").fetchall()
        )


def test_answer_about_another_diagnosis_is_sent_back_then_recorded_as_failure(
    db_path: Path,
) -> None:
    def other_diagnosis(request: Request) -> Reply | None:
        if request.label == "early repolarization" or request.nth == 1:
            return answer("acute myocardial infarction")
        return None

    with LoopbackOpenAI(scripted(other_diagnosis)) as server:
        summary = run(db_path, server, ["early repolarization", "test diagnosis a"])
    assert summary.failed == ["early repolarization"]
    assert summary.generated == ["test diagnosis a"]
    repair = server.requests_for("test diagnosis a")[1].last_user_message
    assert "about 'acute myocardial infarction', not 'test diagnosis a'" in repair
    assert len(server.requests_for("early repolarization")) == 3
    with KnowledgeBase(db_path, read_only=True) as kb:
        assert kb.resolve("early repolarization") is None
        assert kb.resolve("acute myocardial infarction") is None
        (failure,) = kb.failures(summary.run_id)
        assert failure.error_kind == "wrong_diagnosis" and failure.attempt == 3
        assert "not 'early repolarization'" in failure.message


def test_a_synonym_or_a_stored_alias_of_the_requested_diagnosis_is_accepted(
    db_path: Path,
) -> None:
    def standard_name(request: Request) -> Reply:
        record = valid_record("test standard name")
        if request.label == "TSN":
            record["synonyms"] = ["tsn"]
        if request.path == "/v1/chat/completions?unrelated=1":
            record["name"] = "test unrelated name"
        return Reply(content=json.dumps(record))

    with LoopbackOpenAI(standard_name) as server:
        first = run(db_path, server, ["TSN"])
        # regenerating under another stored alias: the record's name is one the base knows
        forced = run(db_path, server, ["tsn"], force=True)
        unrelated = server.base_url + "?unrelated=1"
        other = run(db_path, server, ["tsn"], force=True, base_url=unrelated, max_repairs=0)
    assert first.generated == ["TSN"] and forced.generated == ["tsn"]
    assert other.failed == ["tsn"] and len(server.requests) == 3


def test_labels_in_any_script_each_get_their_own_diagnosis(db_path: Path) -> None:
    labels = ["Ünïcødé", "unicde", "心衰", "心悸", "синусовая тахикардия"]
    with LoopbackOpenAI() as server:
        summary = run(db_path, server, labels)
    assert summary.generated == labels and len(server.requests) == len(labels)
    with KnowledgeBase(db_path, read_only=True) as kb:
        found = [kb.resolve(label) for label in labels]
        assert [d.name if d else None for d in found] == labels


@pytest.mark.parametrize("blank", ["", "   ", "\t", "--"])
def test_blank_labels_are_refused_before_any_request(db_path: Path, blank: str) -> None:
    with LoopbackOpenAI() as server:
        with pytest.raises(LabelError, match="blank label"):
            run(db_path, server, ["test diagnosis a", blank])
        assert server.requests == []
    with KnowledgeBase(db_path, read_only=True) as kb:
        assert list(kb.runs()) == []


def test_each_record_commits_as_soon_as_it_validates(db_path: Path) -> None:
    """Repairs do not queue behind every other label's first attempt."""

    def needs_one_repair(request: Request) -> Reply | None:
        return Reply(content="not yet", delay_s=0.05) if request.nth == 1 else None

    labels = [f"test diagnosis {i:02d}" for i in range(12)]

    async def go() -> None:
        client = KnowledgeClient(settings(server, concurrency=2), api_key=SECRET)
        with KnowledgeBase(db_path) as kb:
            task = asyncio.create_task(generate_knowledge(kb, client, labels))
            while server.served < 8:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await client.aclose()

    with LoopbackOpenAI(scripted(needs_one_repair), latency_s=0.05) as server:
        asyncio.run(go())
        assert server.served < 2 * len(labels)
    with KnowledgeBase(db_path, read_only=True) as kb:
        stored = kb.con.execute("SELECT count(*) FROM knowledge").fetchone()
        (run_row,) = kb.runs()
    # 8 answers: 4 first attempts and 4 repairs, so at least the first labels are in
    assert stored is not None and stored[0] >= 2
    assert run_row["status"] == "interrupted"
    results = json.loads(run_row["summary"])["results"]
    assert len(results) == len(labels)
    assert {r["status"] for r in results} <= {"stored", "interrupted"}


URL_USER, URL_PASSWORD, QUERY_KEY = "ked-user", "url-pass-5e6f7a8b", "query-key-1a2b3c4d"


def with_credentials(server: LoopbackOpenAI) -> str:
    url = server.base_url.replace("http://", f"http://{URL_USER}:{URL_PASSWORD}@")
    return url + f"?api-key={QUERY_KEY}"


def test_credentials_in_the_base_url_reach_the_server_but_no_log_error_or_row(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    basic = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()

    def echo(request: Request) -> Reply:
        told = f"{request.headers['authorization']} {request.path}"
        if request.label == "test leak":
            return Reply(400, error=f"bad request {told}")
        return Reply(content=f"{told} " + json.dumps(valid_record(request.label)))

    caplog.set_level(logging.DEBUG)
    with LoopbackOpenAI(echo) as server:
        summary = run(
            db_path, server, ["test leak", "test echo"], base_url=with_credentials(server)
        )
        assert server.requests[0].headers["authorization"] == f"Basic {basic}"
        assert server.requests[0].path == f"/v1/chat/completions?api-key={QUERY_KEY}"
    assert summary.failed == ["test leak"] and summary.generated == ["test echo"]
    assert "HTTP Request: POST" in caplog.text  # httpx's own log line was captured
    secrets = (URL_PASSWORD, QUERY_KEY, basic, SECRET)
    assert not [s for s in secrets if s in caplog.text]
    with KnowledgeBase(db_path, read_only=True) as kb:
        for (table,) in kb.con.execute("SHOW TABLES").fetchall():
            dump = str(kb.con.execute(f"SELECT * FROM {table}").fetchall())
            assert not [s for s in secrets if s in dump], table
        assert "Basic [redacted]" in kb.failures()[0].message
        stored = kb.current_many([d.id for d, _, _ in kb.diagnoses()])
        (provenance,) = [k.provenance for k in stored.values()]
        assert provenance.params["base_url"] == server.base_url + "?api-key=[redacted]"


def test_llama_cpp_500_refusal_falls_back_at_once_and_for_the_rest_of_the_run(
    db_path: Path,
) -> None:
    labels = [f"test diagnosis {i}" for i in range(6)]
    with LoopbackOpenAI(llama_cpp, latency_s=0.02) as server:
        summary = run(db_path, server, labels, concurrency=4)
    assert summary.ok and summary.retries == 0
    formats = [r.response_format for r in server.requests]
    assert formats == ["json_schema"] + ["json_object"] * len(labels)
    assert summary.output_mode == "json_object"
    (change,) = summary.mode_changes
    assert change.startswith("json_schema refused, HTTP 500:") and "response_format" in change
    with KnowledgeBase(db_path, read_only=True) as kb:
        (run_row,) = kb.runs()
        recorded = json.loads(run_row["summary"])
        assert recorded["output_mode"] == "json_object"
        assert recorded["mode_changes"] == summary.mode_changes


@pytest.mark.parametrize("status", [400, 422])
def test_refusal_of_the_response_format_is_recognised_whatever_the_status(
    db_path: Path, status: int
) -> None:
    def refuses_schema(request: Request) -> Reply | None:
        if request.response_format == "json_schema":
            return Reply(status, error="response_format json_schema is not supported")
        return None

    with LoopbackOpenAI(scripted(refuses_schema)) as server:
        summary = run(db_path, server, ["test a", "test b"], concurrency=2)
    assert summary.ok and summary.output_mode == "json_object"
    assert [r.response_format for r in server.requests].count("json_schema") == 1


def test_truncated_answer_is_named_and_a_complete_one_is_asked_for(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = json.dumps(valid_record("test cut"))

    def cut_off(request: Request) -> Reply | None:
        if (request.label == "test cut" and request.nth == 1) or request.label == "test always":
            return Reply(content=full[: len(full) // 2], finish_reason="length")
        return None

    caplog.set_level(logging.WARNING)
    with LoopbackOpenAI(scripted(cut_off)) as server:
        summary = run(db_path, server, ["test cut", "test always"], max_tokens=300)
    assert summary.generated == ["test cut"] and summary.failed == ["test always"]
    assert all(r.body["max_tokens"] == 300 for r in server.requests)
    repair = server.requests_for("test cut")[1].last_user_message
    assert "cut off at the 300-token limit (finish_reason: length)" in repair
    assert "Write a complete answer that fits" in repair
    assert "Field required" not in repair  # the cut-off object's missing fields would mislead
    assert "answer for 'test always' truncated" in caplog.text
    with KnowledgeBase(db_path, read_only=True) as kb:
        (failure,) = kb.failures(summary.run_id)
        assert failure.error_kind == "truncated" and "cut off" in failure.message


def test_repair_turn_sends_the_last_answer_only(db_path: Path) -> None:
    with LoopbackOpenAI(lambda r: Reply(content=f"attempt {r.nth}: no record")) as server:
        run(db_path, server, ["test hopeless"], max_repairs=2)
    third = server.requests[2].body["messages"]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user"]
    assert third[2]["content"] == "attempt 2: no record"


def test_repair_turn_is_fitted_to_the_context_the_server_reports(db_path: Path) -> None:
    """A long invalid answer does not fit beside the prompt; the server's 400 names its
    context, and the turn is sent again with the answer clipped to fit."""
    context, max_tokens = 8192, 1000

    def four_chars_a_token(request: Request) -> Reply:
        tokens = sum(len(m["content"]) for m in request.body["messages"]) // 4
        if tokens + max_tokens > context:
            return llama_cpp_context_error(context, tokens, max_tokens)
        if request.nth == 1:
            return Reply(content="x" * 40_000, prompt_tokens=tokens)
        return Reply(content=json.dumps(valid_record(request.label)), prompt_tokens=tokens)

    with LoopbackOpenAI(four_chars_a_token) as server:
        summary = run(db_path, server, ["test long"], max_tokens=max_tokens)
    assert summary.ok and len(server.requests) == 3
    refit = server.requests[2].body["messages"]
    assert [m["role"] for m in refit] == ["system", "user", "assistant", "user"]
    assert 0 < len(refit[2]["content"]) < 40_000


def test_compact_prompt_is_recorded_with_its_own_hash(db_path: Path) -> None:
    with LoopbackOpenAI() as server:
        summary = run(db_path, server, ["test a"], prompt="compact")
    system = server.requests[0].body["messages"][0]["content"]
    assert "Fields of the record" in system and "JSON schema:" not in system
    full = KnowledgePrompts()
    assert len(system) < len(full.system.text) / 2
    with KnowledgeBase(db_path, read_only=True) as kb:
        diagnosis = kb.resolve("test a")
        assert summary.ok and diagnosis is not None
        stored = kb.current(diagnosis.id)
        assert stored is not None and stored.provenance.params["prompt"] == "compact"
        compact_sha = KnowledgePrompts(variant="compact").sha256
        assert stored.provenance.prompt_sha256 == compact_sha != full.sha256


def test_connection_errors_name_the_server_and_the_cause(db_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with LoopbackOpenAI(lambda r: Reply(reset=True)) as server:
        resetting = with_credentials(server)
        cases = {
            f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{closed_port}/v1": "connection refused",
            resetting: "connection reset by the server",
            "http://no-such-host.invalid/v1": "DNS lookup failed",
        }
        for base_url, cause in cases.items():
            summary = run(db_path, server, ["test down"], base_url=base_url, max_retries=1)
            with KnowledgeBase(db_path, read_only=True) as kb:
                failure = kb.failures(summary.run_id)[0]
            shown = base_url.split("?")[0].replace(f"{URL_USER}:{URL_PASSWORD}@", "")
            assert failure.error_kind == "connection"
            assert failure.message.startswith(f"cannot reach {shown}")
            assert cause in failure.message, failure.message
            assert URL_PASSWORD not in failure.message and QUERY_KEY not in failure.message
