"""Credentials out of everything ked logs, raises or stores: one helper, used everywhere.

A server's base URL may carry credentials in its userinfo (``http://user:key@host/v1``) or
its query (``?api-key=...``), and the API key comes from the environment. A
:class:`Redactor` replaces those values, and the userinfo or secret-named query parameters
of any URL, with ``[redacted]``. :func:`redact_logs` applies it to every log record of the
process, including the ``-v`` debug logs of openai and httpx.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
_MIN_SECRET_CHARS = 4  # shorter values would blank out ordinary words
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/@?#]+@", re.I)
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&][^\s=&#]*(?:key|token|secret|passw|auth|sig|code)[^\s=&#]*=)[^\s&#\"']+", re.I
)


@dataclass(frozen=True)
class ServerAddress:
    """A base URL split into where to connect and the credentials it carried."""

    url: str | None  # no userinfo, no query
    basic_auth: tuple[str, str] | None = None
    query: dict[str, str] = field(default_factory=dict)


def split_base_url(base_url: str | None) -> ServerAddress:
    """Userinfo becomes HTTP basic auth and the query default parameters, so that no request
    URL (and so no log line or exception of the HTTP stack) holds the credentials."""
    if not base_url:
        return ServerAddress(None)
    parts = urlsplit(base_url)
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    url = urlunsplit(parts._replace(netloc=_host_port(base_url), query="", fragment=""))
    return ServerAddress(url, auth, dict(parse_qsl(parts.query)))


def redact_url(url: str) -> str:
    """The URL without userinfo and with every query value replaced by ``[redacted]``."""
    parts = urlsplit(url)
    query = "&".join(f"{name}={REDACTED}" for name, _ in parse_qsl(parts.query))
    return urlunsplit(parts._replace(netloc=_host_port(url), query=query))


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    return f"{host}:{parts.port}" if parts.port else host


class Redactor:
    """Replaces known secrets, and credentials in any URL, with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        kept = {s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS}
        self.secrets: tuple[str, ...] = tuple(sorted(kept, key=len, reverse=True))

    @classmethod
    def for_server(cls, base_url: str | None, api_key: str | None) -> Redactor:
        """The API key and every credential the base URL carries, as written and decoded."""
        parts = urlsplit(base_url or "")
        written = [parts.username, parts.password]
        written += [pair.partition("=")[2] for pair in parts.query.split("&")]
        secrets = [api_key, *written, *(unquote(value) for value in written if value)]
        auth = split_base_url(base_url).basic_auth
        if auth is not None:
            secrets.append(base64.b64encode(":".join(auth).encode()).decode())
        return cls(secrets)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _USERINFO.sub(r"\g<scheme>" + REDACTED + "@", text)
        return _SECRET_PARAM.sub(r"\g<name>" + REDACTED, text)


_log_redactor = Redactor()
_base_factory = logging.getLogRecordFactory()


def redact_logs(redactor: Redactor) -> None:
    """From now on, redact ``redactor``'s secrets (and URL credentials) from every log record.

    Installed as the process's log-record factory, so it covers every logger and handler.
    """
    global _log_redactor, _base_factory
    _log_redactor = Redactor([*_log_redactor.secrets, *redactor.secrets])
    if logging.getLogRecordFactory() is not _redacting_factory:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging reports it when the record is emitted
        return record
    clean = _log_redactor(message)
    if clean != message:
        record.msg, record.args = clean, None
    return record
