"""A loopback HTTP server that speaks the OpenAI chat-completions API and injects faults.

The test double at the network boundary: the real ``openai`` client talks to it over real
HTTP. A *responder* function decides each reply from the request (the diagnosis label is
read from the user prompt), so tests script answers and faults per label.

It also speaks the files and batches endpoints: an uploaded batch input file (JSONL of
chat-completions requests) is answered line by line through the same responder when the
batch is created; a :class:`BatchPlan` makes the batch end ``failed`` (validation errors, no
output), ``expired`` or ``cancelled`` (only the first lines answered, the rest in the error file as
``batch_expired``/``batch_cancelled``), and lets it report ``in_progress`` for a few polls.
Files: upload (multipart), retrieve, content; batches: create, retrieve, list.
A reply with a status other than 200 becomes a line of the batch's error file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from functools import cache
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[2] / "prompts" / "knowledge" / "example.json"
_LABEL = re.compile(r"^Diagnosis: (.+)$", re.M)


@dataclass(frozen=True)
class Request:
    label: str
    nth: int  # 1 for the first request about this label, 2 for the second, ...
    response_format: str  # "json_schema", "json_object" or "none"
    body: dict[str, Any]
    headers: dict[str, str]
    path: str = ""  # the request target, query included

    @property
    def last_user_message(self) -> str:
        users = [m["content"] for m in self.body["messages"] if m["role"] == "user"]
        return users[-1]


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # chat message content (200 only)
    refusal: str | None = None
    finish_reason: str = "stop"  # "length": cut off at max_tokens
    prompt_tokens: int = 100
    completion_tokens: int = 50
    error: str = "error"  # error message (non-200)
    error_body: dict[str, Any] | None = None  # the whole error body, instead of ``error``
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    reset: bool = False  # answer with a TCP reset instead of HTTP


@dataclass
class BatchPlan:
    """How the next batches end. ``answered``: lines answered before an ``expired`` or
    ``cancelled`` batch stopped (``None``: all); ``polls``: retrieves that report
    ``in_progress`` before the final status; ``reset_create``: the batch is created but the
    answer to the create request is lost."""

    status: str = "completed"  # completed, expired, failed or cancelled
    answered: int | None = None
    polls: int = 0
    reset_create: bool = False  # create the batch, then reset the connection (answer lost)
    errors: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"code": "invalid_request", "message": "loopback: batch failed", "line": 1}
        ]
    )


@dataclass
class _Batch:
    data: dict[str, Any]  # the batch object as retrieved once it has finished
    polls_left: int


# What llama-cpp-python's server (0.3.36, FastAPI 0.165) answers a ``json_schema`` response
# format, as captured from it: its route handler turns the request validation error into 500.
LLAMA_CPP_VALIDATION_ERROR = {
    "type": "literal_error",
    "loc": ("body", "response_format", "type"),
    "msg": "Input should be 'text' or 'json_object'",
    "input": "json_schema",
    "ctx": {"expected": "'text' or 'json_object'"},
}
LLAMA_CPP_RESPONSE_FORMAT_500 = Reply(
    500,
    error_body={
        "error": {
            "message": f"1 validation error:\n  {LLAMA_CPP_VALIDATION_ERROR}\n\n"
            '  File "/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, '
            "in create_chat_completion\n    POST /v1/chat/completions",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)


def llama_cpp_context_error(context: int, messages: int, completion: int) -> Reply:
    """llama-cpp-python's answer to a prompt longer than its context."""
    message = (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{messages + completion} tokens ({messages} in the messages, {completion} in the "
        "completion). Please reduce the length of the messages or completion."
    )
    error = {"message": message, "type": "invalid_request_error", "param": "messages"}
    return Reply(400, error_body={"error": {**error, "code": "context_length_exceeded"}})


@cache
def _example_text() -> str:
    return EXAMPLE.read_text()


def valid_record(label: str) -> dict[str, Any]:
    """A schema-valid knowledge record named ``label`` (neutral labels only: no 'brady')."""
    record = json.loads(_example_text())
    record.update(name=label, synonyms=[], codes={"snomed_ct": [], "scp_ecg": [], "other": []})
    return record


def answer(label: str) -> Reply:
    return Reply(content=json.dumps(valid_record(label)))


def llama_cpp(request: Request) -> Reply:
    """A responder that answers as llama-cpp-python's server: valid records, and HTTP 500 for
    a ``json_schema`` response format."""
    if request.response_format == "json_schema":
        return LLAMA_CPP_RESPONSE_FORMAT_500
    return answer(request.label)


def completion(reply: Reply, model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


class LoopbackOpenAI:
    """Serve on 127.0.0.1 from an asyncio loop in a background thread; a context manager.

    HTTP/1.1 with keep-alive, as real servers speak it. The responder runs in a worker
    thread, so a responder that blocks does not hold up other connections.
    """

    def __init__(
        self, responder: Callable[[Request], Reply] | None = None, latency_s: float = 0.0
    ) -> None:
        self.responder = responder or (lambda request: answer(request.label))
        self.latency_s = latency_s
        self.requests: list[Request] = []
        self.served = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._port = 0
        self.batch_plan = BatchPlan()
        self.files: dict[str, tuple[str, str, bytes]] = {}  # id -> (filename, purpose, bytes)
        self.batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def __enter__(self) -> LoopbackOpenAI:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def requests_for(self, label: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.label == label]

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=256)
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def _record(self, body: dict[str, Any], headers: dict[str, str], path: str) -> Request:
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = _LABEL.search(first_user)
        label = match[1].strip() if match else "?"
        fmt = (body.get("response_format") or {}).get("type", "none")
        with self._lock:
            self._counts[label] += 1
            request = Request(label, self._counts[label], fmt, body, headers, path)
            self.requests.append(request)
        return request

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                extra: dict[str, str] = {}
                routed = await self._files_and_batches(method, path, headers, raw)
                if routed is _RESET:
                    _reset(writer)
                    return
                if routed is not None:
                    status, payload = routed
                elif method == "GET":
                    status, payload = 200, {"requests": len(self.requests)}
                else:
                    body = json.loads(raw or b"{}")
                    reply = await self._reply(body, headers, path)
                    if reply.reset:
                        _reset(writer)
                        return
                    status, extra, payload = _response(reply, body)
                binary = isinstance(payload, bytes)
                data = payload if binary else json.dumps(payload).encode()
                kind = "application/octet-stream" if binary else "application/json"
                head_out = [f"HTTP/1.1 {status} X", f"content-type: {kind}"]
                head_out += [f"content-length: {len(data)}"]
                head_out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode() + data)
                await writer.drain()
                with self._lock:
                    self.served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection, or gave up waiting (timeout tests)
        finally:
            writer.close()

    # -- files and batches ---------------------------------------------------------------

    async def _files_and_batches(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any] | object | None:
        """(status, JSON payload or bytes) of a files or batches request, ``_RESET`` to reset
        the connection instead; None for other requests."""
        parts = path.split("?")[0].strip("/").split("/")[1:]  # without the "v1"
        if not parts or parts[0] not in ("files", "batches"):
            return None
        if parts == ["files"] and method == "POST":
            return 200, self._upload(headers.get("content-type", ""), raw)
        if parts == ["batches"] and method == "POST":
            created = await asyncio.to_thread(self._create_batch, json.loads(raw))
            return _RESET if self.batch_plan.reset_create else created
        if parts == ["batches"]:  # the list, newest first, without counting as polls
            listed = [self._batch_state(b, poll=False) for b in reversed(self.batches.values())]
            return 200, {"object": "list", "data": listed, "has_more": False}
        if parts[0] == "files" and len(parts) in (2, 3) and parts[1] in self.files:
            name, purpose, content = self.files[parts[1]]
            if len(parts) == 3:
                return 200, content
            return 200, _file_object(parts[1], name, purpose, content)
        if parts[0] == "batches" and len(parts) == 2 and parts[1] in self.batches:
            return 200, self._batch_state(self.batches[parts[1]])
        return 404, {"error": {"message": f"no such object: {path}", "type": "invalid_request"}}

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    def _store_file(self, name: str, purpose: str, content: bytes) -> str:
        file_id = self._new_id("file")
        self.files[file_id] = (name, purpose, content)
        return file_id

    def _upload(self, content_type: str, raw: bytes) -> dict[str, Any]:
        form = BytesParser(policy=HTTP).parsebytes(
            f"content-type: {content_type}\r\n\r\n".encode() + raw
        )
        fields = {
            part.get_param("name", header="content-disposition"): part
            for part in form.iter_parts()  # type: ignore[attr-defined]
        }
        upload, purpose = fields["file"], fields["purpose"].get_content().strip()
        content = upload.get_payload(decode=True)
        name = upload.get_filename() or "upload"
        return _file_object(self._store_file(name, purpose, content), name, purpose, content)

    def _create_batch(self, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if spec.get("input_file_id") not in self.files:
            return 400, {"error": {"message": "no such input file", "type": "invalid_request"}}
        plan, now = self.batch_plan, int(time.time())
        lines = self.files[spec["input_file_id"]][2].decode().splitlines()
        tasks = [json.loads(line) for line in lines if line.strip()]
        batch: dict[str, Any] = {
            "id": self._new_id("batch"),
            "object": "batch",
            "endpoint": spec["endpoint"],
            "input_file_id": spec["input_file_id"],
            "completion_window": spec["completion_window"],
            "metadata": spec.get("metadata"),
            "created_at": now,
            "status": plan.status,
            "errors": None,
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": len(tasks), "completed": 0, "failed": 0},
            f"{plan.status}_at": now,
        }
        if plan.status != "failed":
            self._answer_tasks(batch, tasks, plan)
        else:
            batch["errors"] = {"object": "list", "data": plan.errors}
        self.batches[batch["id"]] = _Batch(batch, plan.polls)
        return 200, {**batch, "status": "validating"}

    def _answer_tasks(
        self, batch: dict[str, Any], tasks: list[dict[str, Any]], plan: BatchPlan
    ) -> None:
        """Answer each line through the responder; write the output and error files."""
        answered = len(tasks) if plan.answered is None else plan.answered
        output, errors = [], []
        for n, task in enumerate(tasks):
            line: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": task["custom_id"]}
            if n >= answered:
                code = "batch_expired" if plan.status == "expired" else "batch_cancelled"
                message = f"loopback: the request was not run before the batch {plan.status}"
                errors.append(
                    {**line, "response": None, "error": {"code": code, "message": message}}
                )
                continue
            reply = self.responder(self._record(task["body"], {}, task["url"]))
            status, _, body = _response(reply, task["body"])
            if reply.reset:
                status, body = (
                    500,
                    {"error": {"message": "connection reset", "type": "server_error"}},
                )
            response = {"status_code": status, "request_id": f"req_{n}", "body": body}
            (output if status == 200 else errors).append(
                {**line, "response": response, "error": None}
            )
        counts = batch["request_counts"]
        counts.update(completed=len(output), failed=len(errors))
        for key, rows, purpose in (
            ("output_file_id", output, "batch_output"),
            ("error_file_id", errors, "batch_output"),
        ):
            if rows:
                content = "".join(json.dumps(row) + "\n" for row in rows).encode()
                batch[key] = self._store_file(f"{batch['id']}_{key}.jsonl", purpose, content)

    def _batch_state(self, batch: _Batch, *, poll: bool = True) -> dict[str, Any]:
        if not batch.polls_left:
            return batch.data
        batch.polls_left -= poll
        return {
            **batch.data,
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
        }

    async def _reply(self, body: dict[str, Any], headers: dict[str, str], path: str) -> Reply:
        request = self._record(body, headers, path)
        reply = await asyncio.to_thread(self.responder, request)
        await asyncio.sleep(self.latency_s + reply.delay_s)
        return reply


def _response(reply: Reply, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    if reply.status == 200:
        return 200, reply.headers, completion(reply, body.get("model", "loopback"))
    error = reply.error_body or {
        "error": {"message": reply.error, "type": "loopback", "code": None}
    }
    return reply.status, reply.headers, error


_RESET = object()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset (RST), not an orderly FIN."""
    linger = struct.pack("ii", 1, 0)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    writer.transport.abort()


def _file_object(file_id: str, name: str, purpose: str, content: bytes) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": name,
        "purpose": purpose,
        "status": "processed",
    }


def main() -> None:
    """Serve valid answers from a separate process: ``python -m tests.support.openai_server``.

    Prints the base URL on the first line of stdout; ``GET /stats`` returns the request count.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    args = parser.parse_args()
    with LoopbackOpenAI(latency_s=args.latency) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
