"""A loopback HTTP server that speaks the OpenAI chat-completions API and injects faults.

The test double at the network boundary: the real ``openai`` client talks to it over real
HTTP. A *responder* function decides each reply from the request (the diagnosis label is
read from the user prompt), so tests script answers and faults per label.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
                if method == "GET":
                    status, payload = 200, {"requests": len(self.requests)}
                else:
                    body = json.loads(raw or b"{}")
                    reply = await self._reply(body, headers, path)
                    if reply.reset:
                        linger = struct.pack("ii", 1, 0)  # close with RST, not FIN
                        writer.get_extra_info("socket").setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, linger
                        )
                        writer.transport.abort()
                        return
                    status, extra, payload = _response(reply, body)
                data = json.dumps(payload).encode()
                head_out = [f"HTTP/1.1 {status} X", "content-type: application/json"]
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
