"""Batch generation against the loopback server's files and batches endpoints: real HTTP,
the real openai client, real DuckDB files; failed, expired and partly failed batches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from kb_store.store import KnowledgeBase
from knowledge.batch import (
    batch_status,
    prepare_batch,
    prepare_repair,
    submit_batch,
    vocabulary_labels,
)
from knowledge.batch_collect import BatchNotFinishedError, CollectSummary, collect_batch
from knowledge.batch_files import BatchFileError, load_state, state_path
from knowledge.batch_server import BatchServer, BatchServerError
from knowledge.generate import generate_knowledge
from knowledge.llm import KnowledgeClient, LLMSettings
from tests.support.cli import run_ked
from tests.support.openai_server import (
    BatchPlan,
    LoopbackOpenAI,
    Reply,
    Request,
    answer,
    valid_record,
)

SECRET = "sk-batch-0a1b2c3d4e5f-never-store-me"
LLM = LLMSettings(model="loopback-model", max_repairs=1)


def bad_answers(request: Request) -> Reply:
    """Per label: malformed JSON (echoing the key), a schema-invalid record, another
    diagnosis, an answer cut off at max_tokens, a server error, a rejected request, a refusal;
    valid answers otherwise and for every repair."""
    if request.nth > 1 or not request.label.startswith("bad "):
        return answer(request.label)
    record = valid_record(request.label)
    replies = {
        "bad json": Reply(content=f'{{"name": "bad json", "key": "{SECRET}", "category": '),
        "bad cut": Reply(content='{"name": "bad cut", "summ', finish_reason="length"),
        "bad schema": Reply(content=json.dumps({**record, "category": "astrology"})),
        "bad subject": Reply(content=json.dumps(valid_record("test other"))),
        "bad server": Reply(503, error="overloaded"),
        "bad request": Reply(400, error="invalid messages"),
        "bad refusal": Reply(refusal="I cannot help with that"),
    }
    return replies[request.label]


def prepare(kb: KnowledgeBase, tmp_path: Path, labels: list[str], name: str = "b") -> Path:
    requests = tmp_path / f"{name}.jsonl"
    prepared = prepare_batch(kb, labels, requests, LLM)
    assert prepared.state is not None
    return requests


def to(server: LoopbackOpenAI) -> BatchServer:
    return BatchServer(server.base_url, SECRET, timeout_s=5.0)


def submit(requests: Path, server: LoopbackOpenAI) -> str:
    return asyncio.run(submit_batch(requests, to(server))).id


def collect(kb: KnowledgeBase, requests: Path, server: LoopbackOpenAI) -> CollectSummary:
    return asyncio.run(collect_batch(kb, load_state(requests), to(server)))


def statuses(summary: CollectSummary) -> dict[str, tuple[str, str]]:
    return {o.label: (o.status, o.kind) for o in summary.outcomes}


def counts(kb: KnowledgeBase) -> tuple[int, int]:
    return len(kb.all_knowledge(all_versions=True)), len(kb.failures())


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prepared_requests_are_the_online_path_requests(db_path: Path, tmp_path: Path) -> None:
    """Each line is the very request the online path sends (prompts, schema, settings), with
    a custom_id tied to the diagnosis and the prompt; present and repeated labels are left
    out."""
    settings = LLMSettings(model="loopback-model", max_tokens=900, prompt="compact")
    with LoopbackOpenAI() as server, KnowledgeBase(db_path) as kb:
        online = LLMSettings(**{**settings.__dict__, "base_url": server.base_url})

        async def generate() -> None:
            client = KnowledgeClient(online, api_key=SECRET)
            try:
                await generate_knowledge(kb, client, ["test done"])
            finally:
                await client.aclose()

        asyncio.run(generate())
        prepare_batch(kb, ["test a", "test b"], tmp_path / "x.jsonl", settings)
        sent = server.requests_for("test done")[0].body
        labels = ["test a", "Test  A", "test done", "test b"]
        prepared = prepare_batch(kb, labels, tmp_path / "b.jsonl", settings)
    assert prepared.present == ["test done"] and prepared.duplicates == ["Test  A"]
    lines = jsonl(tmp_path / "b.jsonl")
    assert [line["url"] for line in lines] == ["/v1/chat/completions"] * 2
    expected = json.loads(json.dumps(sent).replace("test done", "test a"))
    assert lines[0]["body"] == expected
    assert lines[0]["body"]["response_format"]["type"] == "json_schema"
    ids = [line["custom_id"] for line in lines]
    assert ids == [line["custom_id"] for line in jsonl(tmp_path / "x.jsonl")]  # stable
    assert len(set(ids)) == 2 and all(cid.startswith("ked-") for cid in ids)
    state = load_state(tmp_path / "b.jsonl")
    assert [(i.custom_id, i.label, i.attempt) for i in state.items] == [
        (ids[0], "test a", 1),
        (ids[1], "test b", 1),
    ]
    assert state.settings["prompt"] == "compact" and state.batches == []


def test_round_trip_stores_with_batch_provenance_and_collects_once(
    db_path: Path, tmp_path: Path
) -> None:
    with LoopbackOpenAI() as server, KnowledgeBase(db_path) as kb:
        server.batch_plan = BatchPlan(polls=2)  # status, then collect
        requests = prepare(kb, tmp_path, ["test a", "test b"])
        batch_id = submit(requests, server)
        running = asyncio.run(batch_status(requests, to(server)))
        assert (running.status, running.finished) == ("in_progress", False)
        with pytest.raises(BatchNotFinishedError, match="in_progress"):
            collect(kb, requests, server)
        done = asyncio.run(batch_status(requests, to(server)))
        assert (done.status, done.total, done.completed, done.failed) == ("completed", 2, 2, 0)
        first = collect(kb, requests, server)
        stored = counts(kb)
        again = collect(kb, requests, server)
        after = counts(kb)
        knowledge = kb.all_knowledge()
        run = next(r for r in kb.runs() if r["id"] == first.run_id)
    assert statuses(first) == {"test a": ("stored", ""), "test b": ("stored", "")}
    assert first.ok and first.prompt_tokens == 200
    assert stored == after == (2, 0)
    assert again.run_id is None and [o.status for o in again.outcomes] == ["collected"] * 2
    state = load_state(requests)
    by_label = {k.diagnosis.name: k for k in knowledge}
    params = by_label["test a"].provenance.params
    assert params["batch_id"] == batch_id and params["repairs"] == 0
    assert params["custom_id"] == state.items[0].custom_id
    assert by_label["test a"].provenance.prompt_sha256 == state.prompt_sha256
    assert by_label["test a"].provenance.provider == "127.0.0.1"
    assert run["kind"] == "batch-collect" and run["status"] == "completed"
    assert state.batches[0].status == "completed" and state.batches[0].output_file_id
    assert SECRET not in state_path(requests).read_text()


def test_invalid_answers_and_error_lines_are_recorded_then_repaired(
    db_path: Path, tmp_path: Path
) -> None:
    """A completed batch with an error file and invalid answers: each request gets its reason;
    the repair batch sends the online path's repair turn for invalid answers and the request
    again for those the server failed; collecting it stores them as first repairs."""
    labels = ["test ok", "bad json", "bad schema", "bad subject", "bad cut"]
    labels += ["bad server", "bad request", "bad refusal"]
    with LoopbackOpenAI(bad_answers) as server, KnowledgeBase(db_path) as kb:
        requests = prepare(kb, tmp_path, labels)
        submit(requests, server)
        first = collect(kb, requests, server)
        failures = {f.label: f for f in kb.failures(first.run_id)}
        plan = prepare_repair(kb, requests, tmp_path / "r.jsonl")
        submit(tmp_path / "r.jsonl", server)
        second = collect(kb, tmp_path / "r.jsonl", server)
        knowledge = {k.diagnosis.name: k for k in kb.all_knowledge()}
        repair_requests = {r.label: r for r in server.requests if r.nth == 2}
    assert statuses(first) == {
        "test ok": ("stored", ""),
        "bad json": ("invalid", "invalid_output"),
        "bad schema": ("invalid", "invalid_output"),
        "bad subject": ("invalid", "wrong_diagnosis"),
        "bad cut": ("invalid", "truncated"),
        "bad server": ("unanswered", "server_error"),
        "bad request": ("failed", "http_400"),
        "bad refusal": ("failed", "refusal"),
    }
    assert not first.ok
    assert "category" in failures["bad schema"].message
    assert SECRET not in failures["bad json"].raw_response  # type: ignore[operator]
    assert "[redacted]" in failures["bad json"].raw_response  # type: ignore[operator]
    assert failures["bad subject"].raw_response == json.dumps(valid_record("test other"))
    assert failures["bad request"].message == "HTTP 400: invalid messages"
    assert failures["bad refusal"].message == "the model refused: I cannot help with that"
    assert plan.repairs == ["bad json", "bad schema", "bad subject", "bad cut"]
    assert plan.resent == ["bad server"] and plan.not_retried == ["bad request", "bad refusal"]
    assert plan.given_up == plan.not_collected == []
    messages = repair_requests["bad subject"].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == json.dumps(valid_record("test other"))
    assert "not 'bad subject'" in messages[3]["content"]
    assert len(repair_requests["bad server"].body["messages"]) == 2
    assert "cut off at the 4096-token limit" in repair_requests["bad cut"].last_user_message
    assert statuses(second) == {label: ("stored", "") for label in plan.repairs + plan.resent}
    assert knowledge["bad json"].provenance.params["repairs"] == 1
    assert knowledge["bad server"].provenance.params["repairs"] == 0
    assert "bad request" not in knowledge and "bad refusal" not in knowledge


def test_expired_batch_collects_the_answers_that_exist(db_path: Path, tmp_path: Path) -> None:
    with LoopbackOpenAI() as server, KnowledgeBase(db_path) as kb:
        server.batch_plan = BatchPlan("expired", answered=1)
        requests = prepare(kb, tmp_path, ["test a", "test b", "test c"])
        submit(requests, server)
        summary = collect(kb, requests, server)
        with pytest.raises(BatchFileError, match="expired"):
            submit(requests, server)  # a file is submitted once; the rest goes by repair
        plan = prepare_repair(kb, requests, tmp_path / "r.jsonl")
    assert statuses(summary) == {
        "test a": ("stored", ""),
        "test b": ("unanswered", "batch_expired"),
        "test c": ("unanswered", "batch_expired"),
    }
    assert plan.resent == ["test b", "test c"] and plan.repairs == []
    original = {line["custom_id"] for line in jsonl(requests)[1:]}
    assert {line["custom_id"] for line in jsonl(tmp_path / "r.jsonl")} == original


def test_failed_batch_records_every_request_and_may_be_submitted_again(
    db_path: Path, tmp_path: Path
) -> None:
    with LoopbackOpenAI() as server, KnowledgeBase(db_path) as kb:
        server.batch_plan = BatchPlan("failed")
        requests = prepare(kb, tmp_path, ["test a", "test b"])
        failed_id = submit(requests, server)
        failed = collect(kb, requests, server)
        status = asyncio.run(batch_status(requests, to(server)))
        server.batch_plan = BatchPlan()
        retried_id = submit(requests, server)
        stored = collect(kb, requests, server)
        again = asyncio.run(collect_batch(kb, load_state(requests), to(server), failed_id))
        failures = kb.failures(failed.run_id)
    assert statuses(failed) == {
        "test a": ("unanswered", "batch_failed"),
        "test b": ("unanswered", "batch_failed"),
    }
    assert failures[0].message == "no answer: the batch failed (loopback: batch failed)"
    assert status.errors == ["invalid_request: loopback: batch failed"]
    assert retried_id != failed_id and stored.batch_id == retried_id
    assert [o.status for o in stored.outcomes] == ["stored", "stored"]
    assert again.run_id is None and len(load_state(requests).batches) == 2


def test_repairs_stop_at_max_repairs(db_path: Path, tmp_path: Path) -> None:
    """max_repairs=1: an answer still invalid after one repair batch is given up."""
    no_json = LoopbackOpenAI(lambda r: Reply(content="no json here"))
    with no_json as server, KnowledgeBase(db_path) as kb:
        requests = prepare(kb, tmp_path, ["test a"])
        submit(requests, server)
        collect(kb, requests, server)
        first = prepare_repair(kb, requests, tmp_path / "r1.jsonl")
        submit(tmp_path / "r1.jsonl", server)
        collect(kb, tmp_path / "r1.jsonl", server)
        second = prepare_repair(kb, tmp_path / "r1.jsonl", tmp_path / "r2.jsonl")
    assert first.repairs == ["test a"] and load_state(tmp_path / "r1.jsonl").items[0].attempt == 2
    assert second.state is None and second.given_up == ["test a"]
    assert not (tmp_path / "r2.jsonl").exists()


def test_damaged_files_and_unreachable_servers_are_clear_errors(
    db_path: Path, tmp_path: Path
) -> None:
    with LoopbackOpenAI() as server, KnowledgeBase(db_path) as kb:
        requests = prepare(kb, tmp_path, ["test a"])
        base_url = server.base_url
        with pytest.raises(BatchFileError, match="not submitted yet"):
            collect(kb, requests, server)
        with pytest.raises(BatchFileError, match="no batch state beside it"):
            submit(tmp_path / "other.jsonl", server)
        requests.write_text(requests.read_text().replace("test a", "test z"))
        with pytest.raises(BatchFileError, match="changed since it was prepared"):
            submit(requests, server)
    with KnowledgeBase(db_path) as kb:
        requests = prepare(kb, tmp_path, ["test a"], name="c")
    with pytest.raises(BatchServerError, match=r"cannot reach .*: connection refused"):
        asyncio.run(submit_batch(requests, BatchServer(base_url, SECRET, max_retries=0)))
    assert load_state(requests).batches == []


def test_batch_commands_round_trip(
    db_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests = str(tmp_path / "b.jsonl")
    with LoopbackOpenAI(bad_answers) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("KED_DB", str(db_path))
        prepared = run_ked(
            capsys,
            "knowledge",
            "batch",
            "prepare",
            "test a",
            "bad json",
            "TEST A",
            "--out",
            requests,
        )
        submitted = run_ked(capsys, "knowledge", "batch", "submit", requests)
        status = run_ked(capsys, "knowledge", "batch", "status", requests)
        collected = run_ked(capsys, "knowledge", "batch", "collect", requests)
        again = run_ked(capsys, "knowledge", "batch", "collect", requests)
        repaired = run_ked(capsys, "knowledge", "batch", "repair", requests)
        missing = run_ked(capsys, "knowledge", "batch", "submit", str(tmp_path / "none.jsonl"))
    assert prepared[0] == 0, prepared
    assert prepared[1] == (
        f"wrote 2 requests to {requests} (state: b.state.json); "
        "0 already have knowledge, 1 duplicates\n"
    )
    assert submitted[0] == 0 and submitted[1].startswith("batch batch-")
    assert status[1].endswith(": completed; 2 of 2 requests answered, 0 failed\n")
    assert collected[0] == 1
    lines = collected[1].splitlines()
    assert lines[0] == "stored      test a: test a v1"
    assert lines[1].startswith("invalid     bad json: invalid_output: ")
    assert "stored 1, invalid 1, unanswered 0, failed 0, collected before 0" in lines[2]
    assert "1 of 2 requests not stored" in collected[2]
    assert again[0] == 0 and "nothing new, 2 requests were collected before" in again[1]
    assert repaired[0] == 0 and "repairs 1, resent 0; left out: given up 0" in repaired[1]
    assert (tmp_path / "b-repair.jsonl").exists()
    assert missing[0] == 2 and "no batch state beside it" in missing[2]


def test_submit_after_a_crash_finds_the_batch_it_created(db_path: Path, tmp_path: Path) -> None:
    """A run that uploaded the file and created the batch, then died before writing the
    state: the rerun adopts that batch instead of uploading or creating a second one."""
    with LoopbackOpenAI() as server, KnowledgeBase(db_path) as kb:
        requests = prepare(kb, tmp_path, ["test a"])
        state = load_state(requests)

        async def crashed_run() -> str:
            client = openai.AsyncOpenAI(api_key=SECRET, base_url=server.base_url)
            async with client:
                upload = await client.files.create(
                    file=(requests.name, requests.read_bytes()), purpose="batch"
                )
                state.uploaded_file_id = upload.id
                state.save()  # the state as the run left it
                created = await client.batches.create(
                    input_file_id=upload.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
                return created.id

        created_id = asyncio.run(crashed_run())
        adopted_id = submit(requests, server)
        summary = collect(kb, requests, server)
        assert adopted_id == created_id
        assert len(server.batches) == 1 and len(server.files) == 2  # the input and the output
        assert [o.status for o in summary.outcomes] == ["stored"]

        server.batch_plan = BatchPlan(reset_create=True)  # the create answer is lost
        requests = prepare(kb, tmp_path, ["test b"], name="c")
        with pytest.raises(BatchServerError, match="cannot reach"):
            submit(requests, server)
        server.batch_plan = BatchPlan()
        adopted_id = submit(requests, server)
    assert len(server.batches) == 2 and adopted_id == list(server.batches)[-1]


def test_vocabulary_labels_carry_their_description_and_code(db_path: Path, tmp_path: Path) -> None:
    labels, contexts = vocabulary_labels("ptbxl")
    assert len(labels) == 71 and contexts["NDT"] == "non-diagnostic T abnormalities; code SCP:NDT"
    with KnowledgeBase(db_path) as kb:
        prepare_batch(kb, labels[:1], tmp_path / "v.jsonl", LLM, contexts=contexts)
    user = jsonl(tmp_path / "v.jsonl")[0]["body"]["messages"][1]["content"]
    assert "Context from the label vocabulary: non-diagnostic T abnormalities; code SCP:NDT" in user
    assert load_state(tmp_path / "v.jsonl").items[0].context == contexts["NDT"]
