"""What an OpenAI-compatible server's errors mean for knowledge generation.

Which errors are a refusal of the response format (fall back, never retry), which are
transient (retry), which say the context is full (and how large it is), how long the server
asks us to wait, and what a connection error was underneath (refused, reset, DNS).
"""

from __future__ import annotations

import re
import socket
from enum import StrEnum

import openai


class OutputMode(StrEnum):
    """How the server is asked for JSON, most to least constrained."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    TEXT = "text"


FALLBACK = {
    OutputMode.JSON_SCHEMA: OutputMode.JSON_OBJECT,
    OutputMode.JSON_OBJECT: OutputMode.TEXT,
}
_UNSUPPORTED = re.compile(
    r"response_format|json_schema|json_object|structured|grammar|not supported|unsupported", re.I
)
_TRANSIENT_STATUS = frozenset({408, 409, 429})
_CONTEXT_FULL = re.compile(r"maximum context length|context (?:length|size|window)", re.I)
_CONTEXT_TOKENS = re.compile(r"maximum context length is (\d+)", re.I)


def error_text(exc: openai.APIStatusError) -> str:
    """The error's message and the response body, as the server wrote them."""
    try:
        body = exc.response.text
    except Exception:  # a streamed body that was not read
        body = ""
    return f"{exc.message} {body}"


def refuses_format(exc: BaseException, mode: OutputMode) -> bool:
    """True when the server says it cannot answer in ``mode``'s response format.

    A 400 or 422 names the feature in many ways. A 5xx counts only when its body names
    ``response_format``: llama-cpp-python's server answers a ``json_schema`` response format
    with HTTP 500 and a validation error (``'loc': ('body', 'response_format', 'type')``).
    """
    if mode is OutputMode.TEXT or not isinstance(exc, openai.APIStatusError):
        return False
    text = error_text(exc)
    if exc.status_code in (400, 422):
        return _UNSUPPORTED.search(text) is not None
    return exc.status_code >= 500 and "response_format" in text


def transient_status(status_code: int) -> bool:
    """An HTTP status worth retrying: 408, 409, 429 and 5xx."""
    return status_code in _TRANSIENT_STATUS or status_code >= 500


def is_transient(exc: BaseException, mode: OutputMode) -> bool:
    """Worth retrying: connection errors and timeouts, 408/409/429 and 5xx that are not a
    refusal of the response format."""
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(exc, openai.APIStatusError) and not refuses_format(exc, mode):
        return transient_status(exc.status_code)
    return False


def context_full(exc: openai.APIStatusError) -> tuple[bool, int | None]:
    """Whether a 400 says the prompt does not fit the context, and the context size if named
    (OpenAI, vLLM and llama-cpp-python: "maximum context length is 4096 tokens")."""
    if exc.status_code != 400:
        return False, None
    text = error_text(exc)
    size = _CONTEXT_TOKENS.search(text)
    return _CONTEXT_FULL.search(text) is not None, int(size[1]) if size else None


def retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds a 429/503 asks us to wait (``retry-after-ms``, or ``retry-after`` in seconds);
    ``None`` when it does not say (an HTTP date included: our own backoff applies)."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(exc.response.headers[header]) / scale
        except (KeyError, ValueError):
            continue
    return None


def connection_cause(exc: BaseException) -> str:
    """What a connection error was underneath, in words: refused, reset, DNS failure, or the
    innermost error's message."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for inner in chain:
        if isinstance(inner, socket.gaierror):
            return f"DNS lookup failed ({inner.strerror or inner})"
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, ConnectionResetError):
            return "connection reset by the server"
    messages = [str(inner) for inner in chain if str(inner)]
    return messages[-1] if messages else type(chain[-1]).__name__
