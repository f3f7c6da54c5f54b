"""Structured knowledge from any OpenAI-compatible chat-completions server.

One :class:`KnowledgeClient` per server and run. It asks for a JSON-schema-constrained
answer; the first time the server refuses a response format (whatever the status code) it
falls back at once, for the rest of the run, to JSON mode and then to plain text from which
the JSON object is extracted. Until one answer settles the mode, requests go one at a time,
so a refusing server sees a single request in each mode it refuses.

Answers are validated with pydantic and must be about the requested diagnosis; an invalid
answer is sent back with its errors (the repair turn: system and user prompt, the last
answer, clipped to the context budget when one is known, and its errors; never the whole
history). An answer cut off at ``max_tokens`` is named as such and a complete, shorter one
is asked for. Transient HTTP failures are retried with exponential backoff and jitter,
honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
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
from knowledge.llm_errors import (
    FALLBACK,
    OutputMode,
    connection_cause,
    context_full,
    error_text,
    is_transient,
    refuses_format,
    retry_after_s,
)
from knowledge.prompting import KnowledgePrompts, PromptVariant, RenderedPrompt
from knowledge.redaction import Redactor, redact_logs, redact_url, split_base_url
from knowledge.schema import DiagnosisKnowledge, format_validation_errors

log = logging.getLogger(__name__)

_CHARS_PER_TOKEN = 3.0  # until the server's usage report tells the real ratio
_BUDGET_SHARE = 0.9  # of the context left for the prompt: token counts from characters are rough
_REASON_CHARS = 200


class GenerationError(RuntimeError):
    """Knowledge for a label could not be generated. ``kind`` says why, for the failure log."""

    def __init__(
        self, kind: str, message: str, *, raw_response: str | None = None, attempt: int = 1
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.raw_response = raw_response
        self.attempt = attempt


class ContextFullError(GenerationError):
    """The prompt did not fit the server's context; ``context_tokens`` if the server said."""

    def __init__(self, message: str, context_tokens: int | None, attempt: int) -> None:
        super().__init__("context_length", message, attempt=attempt)
        self.context_tokens = context_tokens


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
    context_tokens: int | None = None  # the server's context size, when known
    prompt: PromptVariant = "full"
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
            "context_tokens": self.context_tokens,
            "prompt": self.prompt,
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
    raw_response: str  # redacted
    mode: OutputMode
    repairs: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    text: str
    mode: OutputMode
    truncated: bool  # finish_reason "length": cut off at max_tokens


@dataclass(frozen=True)
class Rejection:
    """Why an answer was sent back: ``kind`` (invalid_output, truncated or wrong_diagnosis)
    and the errors the repair turn lists."""

    kind: str
    errors: list[str]


@dataclass(frozen=True)
class _Rejected:
    answer: _Answer
    kind: str  # invalid_output, truncated or wrong_diagnosis
    errors: list[str]


class WrongDiagnosisError(ValueError):
    """A valid record about another diagnosis than the one asked for."""


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
        return DiagnosisKnowledge.model_validate(extract_json(text))
    except ValidationError as exc:
        raise ValueError("\n".join(format_validation_errors(exc))) from None


def _check_subject(
    record: DiagnosisKnowledge, label: str, known_names: Sequence[str]
) -> DiagnosisKnowledge:
    if not refers_to(record, label, known_names):
        raise WrongDiagnosisError(
            f"the record is about {record.name!r}, not {label!r}: write the record for "
            f"{label!r}, with {label!r} as its name or among its synonyms"
        )
    return record


def judge_answer(
    text: str, label: str, known_names: Sequence[str], *, truncated: bool, max_tokens: int
) -> DiagnosisKnowledge | Rejection:
    """The validated record an answer holds, or why it is rejected (the errors a repair turn
    sends back). An answer cut off at ``max_tokens`` is named as such, not as missing fields."""
    try:
        return _check_subject(parse_record(text), label, known_names)
    except WrongDiagnosisError as exc:
        return Rejection("wrong_diagnosis", [str(exc)])
    except ValueError as exc:
        if truncated:  # its "missing fields" would only mislead
            return Rejection(
                "truncated",
                [
                    f"the answer was cut off at the {max_tokens}-token limit "
                    "(finish_reason: length) before its JSON object was complete"
                ],
            )
        return Rejection("invalid_output", str(exc).splitlines())


def chat_messages(
    system: RenderedPrompt,
    user: RenderedPrompt,
    repair: RenderedPrompt | None = None,
    answer: str = "",
) -> list[dict[str, str]]:
    """The messages of one turn: the prompts, and for a repair the last answer (when any is
    left after fitting it to the context) and the repair prompt."""
    messages = [
        {"role": "system", "content": system.text},
        {"role": "user", "content": user.text},
    ]
    if repair is None:
        return messages
    if answer:
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": repair.text})
    return messages


def chat_request(
    settings: LLMSettings,
    prompts: KnowledgePrompts,
    messages: list[dict[str, str]],
    mode: OutputMode,
) -> dict[str, Any]:
    """The body of a chat-completions request in ``mode`` (with its ``response_format``)."""
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": messages,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
    }
    if mode is OutputMode.JSON_SCHEMA:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "diagnosis_knowledge",
                "schema": prompts.json_schema,
                "strict": False,
            },
        }
    elif mode is OutputMode.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    return body


def record_params(
    settings: LLMSettings, prompts: KnowledgePrompts, mode: OutputMode, repairs: int
) -> dict[str, Any]:
    """The generation parameters stored with a record (no key, no credentials)."""
    templates = prompts.templates
    return {
        **settings.public_params(),
        "output_mode": mode.value,
        "repairs": repairs,
        "templates": {
            "system": templates.source_sha256(prompts.SYSTEM[prompts.variant]),
            "user": templates.source_sha256(prompts.USER),
            "repair": templates.source_sha256(prompts.REPAIR),
        },
    }


def openai_client(
    base_url: str | None, api_key: str | None, *, timeout_s: float, max_retries: int = 0
) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` client for ``base_url`` (the OpenAI API when None): credentials in
    the URL become basic auth and its query the default query; the key is optional (local
    servers)."""
    address = split_base_url(base_url)
    return openai.AsyncOpenAI(
        api_key=api_key or "not-needed",
        base_url=address.url,
        default_query=address.query or None,
        http_client=(
            openai.DefaultAsyncHttpxClient(auth=address.basic_auth) if address.basic_auth else None
        ),
        timeout=timeout_s,
        max_retries=max_retries,
    )


def server_name(base_url: str | None) -> str:
    """The server's URL as messages name it: redacted, the OpenAI API when none is given."""
    address = split_base_url(base_url)
    return redact_url(address.url) if address.url else "https://api.openai.com/v1"


def _one_line(text: str, limit: int = _REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        self.prompts = prompts or KnowledgePrompts(variant=settings.prompt)
        self.usage = Usage()
        self.redact = Redactor.for_server(settings.base_url, api_key)
        redact_logs(self.redact)
        self._server = server_name(settings.base_url)
        # One retry layer: tenacity (in _request), with the SDK's own retries off. The SDK
        # decides from status and headers before it reads the body, so it would retry
        # llama-cpp-python's HTTP 500 refusal of response_format instead of falling back;
        # tenacity's predicate sees the whole error and the mode asked for. It also gives
        # jittered exponential backoff that tests can shrink, a hook that counts and logs
        # retries (redacted), and one concurrency slot per request and its retries. Only
        # Retry-After, which the SDK does not expose, is read by hand (retry_after_s).
        self._client = openai_client(settings.base_url, api_key, timeout_s=settings.timeout_s)
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._backoff = wait_random_exponential(
            multiplier=settings.backoff_s, max=settings.retry_max_wait_s
        )
        self._mode = OutputMode.JSON_SCHEMA
        self._mode_settled = False  # set by the first answer that is not a refusal
        self._probe = asyncio.Lock()  # one request at a time until the mode is settled
        self.mode_changes: list[str] = []  # each fallback and the server's reason
        self._context_tokens = settings.context_tokens
        self._chars_per_token = _CHARS_PER_TOKEN

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
        rejected: _Rejected | None = None
        for attempt in range(1, self.settings.max_repairs + 2):
            answer = await self._ask(label, system, user, rejected, attempt)
            if answer.truncated:
                log.warning(
                    "answer for %r truncated: cut off at max_tokens=%d (finish_reason: length), "
                    "attempt %d",
                    label,
                    self.settings.max_tokens,
                    attempt,
                )
            verdict = judge_answer(
                answer.text,
                label,
                known_names,
                truncated=answer.truncated,
                max_tokens=self.settings.max_tokens,
            )
            if isinstance(verdict, Rejection):
                rejected = _Rejected(answer, verdict.kind, verdict.errors)
                log.info(
                    "answer for %r rejected (%s), attempt %d: %s",
                    label,
                    rejected.kind,
                    attempt,
                    _one_line("; ".join(rejected.errors)),
                )
                continue
            params = record_params(self.settings, self.prompts, answer.mode, attempt - 1)
            return Generated(
                label, verdict, self.redact(answer.text), answer.mode, attempt - 1, params
            )
        assert rejected is not None
        raise GenerationError(
            rejected.kind,
            f"no valid record after {attempt} answers: " + "; ".join(rejected.errors[:10]),
            raw_response=self.redact(rejected.answer.text),
            attempt=attempt,
        )

    async def _ask(
        self,
        label: str,
        system: RenderedPrompt,
        user: RenderedPrompt,
        rejected: _Rejected | None,
        attempt: int,
    ) -> _Answer:
        """One answer; a repair turn that overflows a context of newly learnt size is refit."""
        try:
            return await self._complete(self._turn(label, system, user, rejected), attempt)
        except ContextFullError as exc:
            if rejected is None or not self._learn_context(exc.context_tokens):
                raise
            return await self._complete(self._turn(label, system, user, rejected), attempt)

    def _turn(
        self,
        label: str,
        system: RenderedPrompt,
        user: RenderedPrompt,
        rejected: _Rejected | None,
    ) -> list[dict[str, str]]:
        """The messages of one turn: the prompts, and for a repair the last answer (clipped
        to the context budget) and what was wrong with it."""
        if rejected is None:
            return chat_messages(system, user)
        repair = self.prompts.repair(
            label,
            rejected.errors,
            truncated=rejected.answer.truncated,
            max_tokens=self.settings.max_tokens,
        )
        used = len(system.text) + len(user.text) + len(repair.text)
        return chat_messages(system, user, repair, self._fit(rejected.answer.text, used))

    def _fit(self, answer: str, used_chars: int) -> str:
        """The part of the last answer that fits the context beside the rest of the turn and
        room for a full-length reply."""
        if self._context_tokens is None:
            return answer
        tokens = (self._context_tokens - self.settings.max_tokens) * _BUDGET_SHARE
        room = int(tokens * self._chars_per_token) - used_chars
        if room >= len(answer):
            return answer
        log.info(
            "repair turn: last answer %s to fit a %d-token context",
            f"clipped to {room} of {len(answer)} characters" if room > 0 else "left out",
            self._context_tokens,
        )
        return answer[: max(room, 0)]

    def _learn_context(self, context_tokens: int | None) -> bool:
        if context_tokens is None or (
            self._context_tokens is not None and self._context_tokens <= context_tokens
        ):
            return False
        log.info("server context: %d tokens; repair turns are fitted to it", context_tokens)
        self._context_tokens = context_tokens
        return True

    async def _complete(self, messages: list[dict[str, str]], attempt: int) -> _Answer:
        """One answer's text, with retries and output-mode fallback."""
        try:
            response, mode = await self._send(messages)
        except openai.OpenAIError as exc:
            raise self._error(exc, attempt) from None
        choice = response.choices[0] if response.choices else None
        if choice is None:
            raise GenerationError(
                "invalid_output", "the server returned no choices", attempt=attempt
            )
        if response.usage is not None:
            self.usage.prompt_tokens += response.usage.prompt_tokens or 0
            self.usage.completion_tokens += response.usage.completion_tokens or 0
            if response.usage.prompt_tokens:
                chars = sum(len(m["content"]) for m in messages)
                self._chars_per_token = max(1.0, chars / response.usage.prompt_tokens)
        refusal = getattr(choice.message, "refusal", None)
        if refusal or choice.finish_reason == "content_filter":
            raise GenerationError(
                "refusal",
                self.redact(f"the model refused: {refusal or 'content filter'}"),
                raw_response=self.redact(refusal) if refusal else None,
                attempt=attempt,
            )
        return _Answer(choice.message.content or "", mode, choice.finish_reason == "length")

    async def _send(self, messages: list[dict[str, str]]) -> tuple[Any, OutputMode]:
        """One request (and its retries) in the current output mode, falling back at once
        while the server refuses the mode. Until the mode is settled, requests go one at a
        time, so every request after a refusal uses the mode that works."""
        async with self._semaphore:
            while True:
                probing = not self._mode_settled
                if probing:
                    await self._probe.acquire()
                    probing = not self._mode_settled
                    if not probing:
                        self._probe.release()
                mode = self._mode
                try:
                    response = await self._request(messages, mode)
                except openai.APIStatusError as exc:
                    if refuses_format(exc, mode):
                        self._fall_back(mode, exc)
                        continue
                    self._mode_settled = True
                    raise
                except openai.OpenAIError:
                    self._mode_settled = True
                    raise
                finally:
                    if probing:
                        self._probe.release()
                self._mode_settled = True
                return response, mode

    def _fall_back(self, mode: OutputMode, exc: openai.APIStatusError) -> None:
        if self._mode is not mode:
            return  # another request already fell back
        fallback = FALLBACK[mode]
        reason = self.redact(_one_line(f"HTTP {exc.status_code}: {error_text(exc)}"))
        log.warning("server refused %s output (%s); using %s from now on", mode, reason, fallback)
        self._mode = fallback
        self.mode_changes.append(f"{mode} refused, {reason}")

    async def _request(self, messages: list[dict[str, str]], mode: OutputMode) -> Any:
        kwargs = chat_request(self.settings, self.prompts, messages, mode)
        # response_format goes in extra_body: the SDK would otherwise walk the whole JSON
        # schema through its typed transform on every request.
        if "response_format" in kwargs:
            kwargs["extra_body"] = {"response_format": kwargs.pop("response_format")}
        retrying = AsyncRetrying(
            retry=retry_if_exception(partial(is_transient, mode=mode)),
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
        retry_after = retry_after_s(exc)
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
            self.redact(_one_line(str(exc))),
        )

    def _error(self, exc: openai.OpenAIError, attempt: int) -> GenerationError:
        message = self.redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, openai.APITimeoutError):
            timeout = self.settings.timeout_s
            return GenerationError(
                "timeout", f"no answer from {self._server} within {timeout:g} s", attempt=attempt
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = self.redact(connection_cause(exc))
            return GenerationError(
                "connection", f"cannot reach {self._server}: {cause}", attempt=attempt
            )
        if not isinstance(exc, openai.APIStatusError):
            return GenerationError("client_error", message, attempt=attempt)
        full, context_tokens = context_full(exc)
        if full:
            hint = " (a compact prompt, fewer max tokens or the context size make turns fit)"
            return ContextFullError(message + hint, context_tokens, attempt)
        if isinstance(exc, openai.RateLimitError):
            kind = "rate_limit"
        else:
            kind = "server_error" if exc.status_code >= 500 else f"http_{exc.status_code}"
        return GenerationError(kind, message, attempt=attempt)
