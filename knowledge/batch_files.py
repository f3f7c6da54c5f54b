"""The files of a batch: the request JSONL and its state JSON beside it.

``prepare_batch`` writes one ``/v1/chat/completions`` request per diagnosis, built by the
same code as the online path (prompts, messages, ``response_format``). Its ``custom_id``
ties the line to the diagnosis and the request: ``ked-<name hash>-<request hash>``.

The state file (``<name>.state.json``) holds what the JSONL alone does not: the label and
attempt of each ``custom_id``, the settings the requests were built with, and the batches
created from it. It is small and rewritten whole, atomically (temporary file, then rename),
after each step, so a crash leaves the previous state or the next one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from ked.errors import UserError
from knowledge.llm import LLMSettings, chat_messages, chat_request, record_params
from knowledge.llm_errors import OutputMode
from knowledge.names import normalize_name
from knowledge.prompting import KnowledgePrompts, sha256_text

STATE_VERSION = 1
ENDPOINT: Final = "/v1/chat/completions"
# Settings a request is built with; the server's URL, timeout and retries are the caller's.
_REQUEST_SETTINGS = ("model", "temperature", "max_tokens", "max_repairs", "prompt")


class BatchFileError(UserError, ValueError):
    """A batch file is missing, damaged or in a state that forbids the step asked for."""


@dataclass(frozen=True)
class BatchItem:
    """One request line: its diagnosis label, the vocabulary context and which attempt it is
    (1: the first request; 2 and on: repair turns)."""

    custom_id: str
    label: str
    context: str | None = None
    attempt: int = 1


@dataclass
class SubmittedBatch:
    """A batch created from the file, as last seen on the server."""

    id: str
    input_file_id: str
    server: str  # redacted
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None

    def seen(self, batch: Any) -> None:
        """Keep what the server said of the batch (an ``openai`` ``Batch``)."""
        self.status = batch.status
        self.output_file_id = batch.output_file_id
        self.error_file_id = batch.error_file_id


@dataclass
class BatchState:
    """The state JSON of a request file (``path``, the JSONL, is not stored)."""

    path: Path
    requests_sha256: str
    settings: dict[str, Any]
    output_mode: str
    prompt_sha256: str
    params: dict[str, Any]  # stored with each record (the online path's, server aside)
    items: list[BatchItem]
    batches: list[SubmittedBatch] = field(default_factory=list)
    uploaded_file_id: str | None = None  # uploaded, no batch created from it yet
    version: int = STATE_VERSION

    @property
    def state_path(self) -> Path:
        return state_path(self.path)

    def llm_settings(self, base_url: str | None = None, **overrides: Any) -> LLMSettings:
        return LLMSettings(**self.settings, base_url=base_url, **overrides)

    def item(self, custom_id: str) -> BatchItem | None:
        return self._by_id.get(custom_id)

    @property
    def _by_id(self) -> dict[str, BatchItem]:
        return {item.custom_id: item for item in self.items}

    def batch(self, batch_id: str | None = None) -> SubmittedBatch:
        """The batch ``batch_id`` of this file, by default the latest."""
        if not self.batches:
            raise BatchFileError(
                f"{self.path} was not submitted yet ('ked knowledge batch submit')"
            )
        if batch_id is None:
            return self.batches[-1]
        for batch in self.batches:
            if batch.id == batch_id:
                return batch
        known = ", ".join(b.id for b in self.batches)
        raise BatchFileError(f"batch {batch_id} is not one of {self.path}'s batches ({known})")

    def save(self) -> None:
        """Write the state JSON atomically."""
        data = asdict(self)
        data.pop("path")
        write_atomic(self.state_path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def check_requests(self) -> None:
        """Raise when the JSONL is gone or differs from what was prepared."""
        if not self.path.is_file():
            raise BatchFileError(f"{self.path}: the request file is missing")
        if file_sha256(self.path) != self.requests_sha256:
            raise BatchFileError(f"{self.path} changed since it was prepared; prepare it again")


@dataclass(frozen=True)
class Prepared:
    state: BatchState | None  # None when every label already has knowledge
    present: list[str]  # labels skipped: their diagnosis already has knowledge
    duplicates: list[str]  # labels that repeat an earlier one


def state_path(requests: Path) -> Path:
    return requests.with_name(requests.stem + ".state.json")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_state(requests: Path) -> BatchState:
    """The state of the request file ``requests``; a clear error when it has none."""
    path = state_path(requests)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BatchFileError(
            f"{requests}: no batch state beside it ({path.name}); "
            "'ked knowledge batch prepare' writes both"
        ) from None
    except (OSError, ValueError) as exc:
        raise BatchFileError(f"{path}: unreadable batch state ({exc})") from None
    if data.get("version") != STATE_VERSION:
        raise BatchFileError(f"{path}: batch state version {data.get('version')} is not supported")
    data["items"] = [BatchItem(**item) for item in data["items"]]
    data["batches"] = [SubmittedBatch(**batch) for batch in data["batches"]]
    return BatchState(path=requests, **data)


def custom_id(label: str, body: dict[str, Any]) -> str:
    """``ked-<name hash>-<request hash>``: the diagnosis and the exact prompt sent."""
    name = sha256_text(normalize_name(label))[:10]
    request = sha256_text(json.dumps(body, sort_keys=True, ensure_ascii=False))[:16]
    return f"ked-{name}-{request}"


def request_line(label: str, body: dict[str, Any]) -> tuple[str, str]:
    """(custom_id, JSONL line) of one request."""
    cid = custom_id(label, body)
    line = {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}
    return cid, json.dumps(line, ensure_ascii=False)


def first_request(
    settings: LLMSettings,
    prompts: KnowledgePrompts,
    mode: OutputMode,
    label: str,
    context: str | None,
) -> dict[str, Any]:
    """The body of a diagnosis's first request, exactly as the online path sends it."""
    messages = chat_messages(prompts.system, prompts.user(label, context))
    return chat_request(settings, prompts, messages, mode)


def write_batch(
    requests: Path,
    settings: LLMSettings,
    prompts: KnowledgePrompts,
    mode: OutputMode,
    lines: Sequence[tuple[BatchItem, str]],
) -> BatchState:
    """Write the JSONL and then its state (both atomically); refuse to overwrite a file
    that has batches."""
    if state_path(requests).exists() and load_state(requests).batches:
        raise BatchFileError(
            f"{requests} was already submitted; write the new requests to another file"
        )
    write_atomic(requests, "".join(line + "\n" for _, line in lines))
    state = BatchState(
        path=requests,
        requests_sha256=file_sha256(requests),
        settings={key: getattr(settings, key) for key in _REQUEST_SETTINGS},
        output_mode=mode.value,
        prompt_sha256=prompts.sha256,
        params=record_params(settings, prompts, mode, 0),
        items=[item for item, _ in lines],
    )
    state.save()
    return state


def read_requests(requests: Path) -> dict[str, dict[str, Any]]:
    """The request bodies of a JSONL file by ``custom_id``."""
    bodies = {}
    for line in requests.read_text(encoding="utf-8").splitlines():
        if line.strip():
            task = json.loads(line)
            bodies[task["custom_id"]] = task["body"]
    return bodies
