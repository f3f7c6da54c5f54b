"""A loopback HTTP server that speaks the OpenAI chat-completions API and injects faults.

The test double at the network boundary: the real ``openai`` client talks to it over real
HTTP. A *responder* function decides each reply from the request (the diagnosis label is
read from the user prompt), so tests script answers and faults per label.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

    @property
    def last_user_message(self) -> str:
        users = [m["content"] for m in self.body["messages"] if m["role"] == "user"]
        return users[-1]


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # chat message content (200 only)
    refusal: str | None = None
    error: str = "error"  # error message (non-200)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def valid_record(label: str) -> dict[str, Any]:
    """A schema-valid knowledge record named ``label`` (neutral labels only: no 'brady')."""
    record = json.loads(EXAMPLE.read_text())
    record.update(name=label, synonyms=[], codes={"snomed_ct": [], "scp_ecg": [], "other": []})
    return record


def answer(label: str) -> Reply:
    return Reply(content=json.dumps(valid_record(label)))


def completion(reply: Reply, model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }


class LoopbackOpenAI:
    """Serve on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(
        self, responder: Callable[[Request], Reply] | None = None, latency_s: float = 0.0
    ) -> None:
        self.responder = responder or (lambda request: answer(request.label))
        self.latency_s = latency_s
        self.requests: list[Request] = []
        self.served = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> LoopbackOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests_for(self, label: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.label == label]

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> Request:
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = _LABEL.search(first_user)
        label = match[1].strip() if match else "?"
        fmt = (body.get("response_format") or {}).get("type", "none")
        with self._lock:
            self._counts[label] += 1
            request = Request(label, self._counts[label], fmt, body, headers)
            self.requests.append(request)
        return request

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                request = server._record(body, {k.lower(): v for k, v in self.headers.items()})
                reply = server.responder(request)
                time.sleep(server.latency_s + reply.delay_s)
                if reply.status == 200:
                    payload = completion(reply, body.get("model", "loopback"))
                else:
                    payload = {"error": {"message": reply.error, "type": "loopback", "code": None}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (timeout test)
                with server._lock:
                    server.served += 1

        return Handler
