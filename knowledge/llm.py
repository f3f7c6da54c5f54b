"""Structured knowledge from any OpenAI-compatible chat-completions server.

One :class:`KnowledgeClient` asks for a JSON-schema-constrained answer and falls back, the
first time a server says it cannot do that, to JSON mode and then to plain text from which
the JSON object is extracted. Answers are validated with pydantic; an invalid answer is sent
back with the validation errors (the repair prompt). Transient HTTP failures are retried with
exponential backoff and jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import openai
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from kb_store.aliases import refers_to
from knowledge.prompting import KnowledgePrompts
from knowledge.redaction import Redactor, redact_logs, redact_url, split_base_url
from knowledge.schema import DiagnosisKnowledge, format_validation_errors

log = logging.getLogger(__name__)


class OutputMode(StrEnum):
    """How the server is asked for JSON, most to least constrained."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    TEXT = "text"


_FALLBACK = {
    OutputMode.JSON_SCHEMA: OutputMode.JSON_OBJECT,
    OutputMode.JSON_OBJECT: OutputMode.TEXT,
}
_UNSUPPORTED = re.compile(
    r"response_format|json_schema|json_object|structured|grammar|not supported|unsupported", re.I
)
_TRANSIENT_STATUS = {408, 409, 429}


class GenerationError(RuntimeError):
    """Knowledge for a label could not be generated. ``kind`` says why, for the failure log."""

    def __init__(
        self, kind: str, message: str, *, raw_response: str | None = None, attempt: int = 1
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.raw_response = raw_response
        self.attempt = attempt


@dataclass(frozen=True)
class LLMSettings:
    """Everything that shapes a request, except the API key (environment only)."""

    model: str
    base_url: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    max_repairs: int = 2
    concurrency: int = 8
    temperature: float = 0.2
    max_tokens: int = 4096
    backoff_s: float = 0.5
    retry_max_wait_s: float = 30.0

    @property
    def provider(self) -> str:
        """Host of the server (``api.openai.com`` by default), without credentials."""
        return urlsplit(self.base_url).hostname or "unknown" if self.base_url else "api.openai.com"

    def public_params(self) -> dict[str, Any]:
        """The settings as stored with a record: no key, no credentials in the URL."""
        return {
            "model": self.model,
            "base_url": redact_url(self.base_url) if self.base_url else None,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "max_repairs": self.max_repairs,
        }


@dataclass
class Usage:
    """Counters over all requests of a client."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Generated:
    label: str
    record: DiagnosisKnowledge
    raw_response: str
    mode: OutputMode
    repairs: int
    params: dict[str, Any] = field(default_factory=dict)


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (which may hold prose or Markdown fences around it)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("the answer holds no JSON object")


def parse_record(text: str) -> DiagnosisKnowledge:
    """Parse and validate an answer; ``ValueError`` lists what is wrong, field by field."""
    try:
        data = extract_json(text)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    try:
        return DiagnosisKnowledge.model_validate(data)
    except ValidationError as exc:
        raise ValueError("\n".join(format_validation_errors(exc))) from None


class WrongDiagnosisError(ValueError):
    """A valid record about another diagnosis than the one asked for."""


def _check_subject(
    record: DiagnosisKnowledge, label: str, known_names: Sequence[str]
) -> DiagnosisKnowledge:
    if not refers_to(record, label, known_names):
        raise WrongDiagnosisError(
            f"the record is about {record.name!r}, not {label!r}: write the record for "
            f"{label!r}, with {label!r} as its name or among its synonyms"
        )
    return record


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    return False


def _retry_after_s(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return None


class KnowledgeClient:
    """Generates validated :class:`DiagnosisKnowledge` through an OpenAI-compatible API."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        api_key: str | None,
        prompts: KnowledgePrompts | None = None,
    ) -> None:
        self.settings = settings
        self.prompts = prompts or KnowledgePrompts()
        self.usage = Usage()
        self.redact = Redactor.for_server(settings.base_url, api_key)
        redact_logs(self.redact)
        address = split_base_url(settings.base_url)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=address.url,
            default_query=address.query or None,
            http_client=(
                openai.DefaultAsyncHttpxClient(auth=address.basic_auth)
                if address.basic_auth
                else None
            ),
            timeout=settings.timeout_s,
            max_retries=0,  # tenacity below owns retries
        )
        self._mode = OutputMode.JSON_SCHEMA
        self.mode_changes: list[str] = []  # each fallback and the server's reason
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._backoff = wait_random_exponential(
            multiplier=settings.backoff_s, max=settings.retry_max_wait_s
        )

    async def aclose(self) -> None:
        await self._client.close()

    @property
    def mode(self) -> OutputMode:
        """The output mode the server is currently asked for."""
        return self._mode

    async def generate(
        self, label: str, context: str | None = None, *, known_names: Sequence[str] = ()
    ) -> Generated:
        """Knowledge for one label; raises :class:`GenerationError` when it cannot.

        The record must be about ``label``: its name or a synonym is the label or one of
        ``known_names`` (the diagnosis's aliases already stored), else it is sent back.
        """
        system, user = self.prompts.system, self.prompts.user(label, context)
        messages: list[dict[str, str]] = [
            {"role": "system", "content": system.text},
            {"role": "user", "content": user.text},
        ]
        for repair in range(self.settings.max_repairs + 1):
            raw, mode = await self._complete(label, messages, attempt=repair + 1)
            try:
                record = _check_subject(parse_record(raw), label, known_names)
            except ValueError as exc:
                kind = (
                    "wrong_diagnosis" if isinstance(exc, WrongDiagnosisError) else "invalid_output"
                )
                errors = str(exc).splitlines()
                log.info(
                    "answer for %r rejected (%s, %d errors), attempt %d",
                    label,
                    kind,
                    len(errors),
                    repair + 1,
                )
                if repair == self.settings.max_repairs:
                    raise GenerationError(
                        kind,
                        f"no valid record after {repair + 1} answers: " + "; ".join(errors[:10]),
                        raw_response=self.redact(raw),
                        attempt=repair + 1,
                    ) from None
                messages = [
                    *messages,
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": self.prompts.repair(label, errors).text},
                ]
                continue
            params = {
                **self.settings.public_params(),
                "output_mode": mode.value,
                "repairs": repair,
                "templates": {
                    "system": system.template_sha256,
                    "user": user.template_sha256,
                    "repair": self.prompts.templates.source_sha256(self.prompts.REPAIR),
                },
            }
            return Generated(label, record, self.redact(raw), mode, repair, params)
        raise AssertionError("unreachable")

    async def _complete(
        self, label: str, messages: list[dict[str, str]], *, attempt: int
    ) -> tuple[str, OutputMode]:
        """One answer's text, with retries and output-mode fallback."""
        while True:
            try:
                # a slot covers one request and its retries, so backoff also slows the flow
                async with self._semaphore:
                    mode = self._mode
                    response = await self._request(messages, mode)
            except openai.APIStatusError as exc:
                fallback = _FALLBACK.get(mode)
                if exc.status_code in (400, 422) and fallback and _UNSUPPORTED.search(str(exc)):
                    if self._mode == mode:
                        log.warning("server refused %s output; falling back to %s", mode, fallback)
                        self._mode = fallback
                        self.mode_changes.append(f"{mode} -> {fallback}: HTTP {exc.status_code}")
                    continue
                raise self._error(exc, attempt) from None
            except (openai.APIConnectionError, openai.OpenAIError) as exc:
                raise self._error(exc, attempt) from None
            choice = response.choices[0] if response.choices else None
            if choice is None:
                raise GenerationError(
                    "invalid_output", "the server returned no choices", attempt=attempt
                )
            if response.usage is not None:
                self.usage.prompt_tokens += response.usage.prompt_tokens or 0
                self.usage.completion_tokens += response.usage.completion_tokens or 0
            refusal = getattr(choice.message, "refusal", None)
            if refusal or choice.finish_reason == "content_filter":
                raise GenerationError(
                    "refusal",
                    f"the model refused: {refusal or 'content filter'}",
                    raw_response=refusal,
                    attempt=attempt,
                )
            return choice.message.content or "", mode

    async def _request(self, messages: list[dict[str, str]], mode: OutputMode) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        # response_format goes in extra_body: the SDK would otherwise walk the whole JSON
        # schema through its typed transform on every request.
        if mode is OutputMode.JSON_SCHEMA:
            kwargs["extra_body"] = {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "diagnosis_knowledge",
                        "schema": self.prompts.json_schema,
                        "strict": False,
                    },
                }
            }
        elif mode is OutputMode.JSON_OBJECT:
            kwargs["extra_body"] = {"response_format": {"type": "json_object"}}
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            wait=self._wait,
            stop=stop_after_attempt(self.settings.max_retries + 1),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                self.usage.requests += 1
                response = await self._client.chat.completions.create(**kwargs)
        return response

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = _retry_after_s(exc)
        if retry_after is not None:
            return min(retry_after, self.settings.retry_max_wait_s)
        return float(self._backoff(state))

    def _before_retry(self, state: RetryCallState) -> None:
        self.usage.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info(
            "retrying after %s (attempt %d): %s",
            type(exc).__name__,
            state.attempt_number,
            self.redact(str(exc)),
        )

    def _error(self, exc: BaseException, attempt: int) -> GenerationError:
        if isinstance(exc, openai.APITimeoutError):
            kind = "timeout"
        elif isinstance(exc, openai.APIConnectionError):
            kind = "connection"
        elif isinstance(exc, openai.RateLimitError):
            kind = "rate_limit"
        elif isinstance(exc, openai.APIStatusError):
            kind = "server_error" if exc.status_code >= 500 else f"http_{exc.status_code}"
        else:
            kind = "client_error"
        return GenerationError(kind, self.redact(f"{type(exc).__name__}: {exc}"), attempt=attempt)
