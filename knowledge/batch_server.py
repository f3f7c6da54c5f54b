"""Talking to the files and batches endpoints of any OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import openai

from ked.errors import UserError
from knowledge.batch_files import BatchState, SubmittedBatch
from knowledge.llm import LLMSettings, openai_client, server_name
from knowledge.llm_errors import connection_cause, error_text
from knowledge.redaction import Redactor, redact_logs

FINISHED = frozenset({"completed", "expired", "cancelled", "failed"})


class BatchServerError(UserError, RuntimeError):
    """The server could not be reached or refused a files/batches request."""


@dataclass(frozen=True)
class BatchServer:
    """Where batches go: any base URL (the OpenAI API by default), the key optional as on the
    online path; seconds per request and the SDK's retries of a failed one."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    max_retries: int = 2

    @property
    def redact(self) -> Redactor:
        return Redactor.for_server(self.base_url, self.api_key)

    def settings(self, state: BatchState) -> LLMSettings:
        """The settings of the file's requests, on this server."""
        return state.llm_settings(
            self.base_url, timeout_s=self.timeout_s, max_retries=self.max_retries
        )


@asynccontextmanager
async def batch_client(server: BatchServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """A client for files and batches; its errors become one-line :class:`BatchServerError`s
    (redacted). The SDK's own retries apply: these calls never carry a response format."""
    client = openai_client(
        server.base_url,
        server.api_key,
        timeout_s=server.timeout_s,
        max_retries=server.max_retries,
    )
    redact = server.redact
    redact_logs(redact)
    name = server_name(server.base_url)
    try:
        yield client
    except openai.APIConnectionError as exc:
        cause = "timed out" if isinstance(exc, openai.APITimeoutError) else connection_cause(exc)
        raise BatchServerError(redact(f"cannot reach {name}: {cause}")) from None
    except openai.APIStatusError as exc:
        text = " ".join(error_text(exc).split())[:300]
        raise BatchServerError(redact(f"{name}: HTTP {exc.status_code}: {text}")) from None
    finally:
        await client.close()


async def retrieve(client: openai.AsyncOpenAI, state: BatchState, submitted: SubmittedBatch) -> Any:
    """The server's ``Batch`` object of a batch of the file; its status is kept in the state."""
    batch = await client.batches.retrieve(submitted.id)
    submitted.seen(batch)
    state.save()
    return batch
