"""Configuration: command-line flags over environment variables over defaults.

| setting  | flag         | environment       | default          |
|----------|--------------|-------------------|------------------|
| database | ``--db``     | ``KED_DB``        | ``./ked.duckdb`` |
| server   | ``--base-url``| ``OPENAI_BASE_URL``| OpenAI's API    |
| model    | ``--model``  | ``KED_MODEL``     | ``gpt-4o-mini``  |
| API key  | (none)       | ``OPENAI_API_KEY``| none             |
| knowledge statuses | ``--use-knowledge`` | ``KED_USE_KNOWLEDGE`` | ``accepted`` |

The API key is read from the environment only, so it never appears in shell history,
process lists, the database or logs.

The knowledge statuses say which knowledge versions feed embeddings, training and zero-shot:
the latest version of a diagnosis whose review status is one of them. The safe default uses
accepted knowledge only (the curated pack, and LLM records once a person accepted them);
``accepted,proposed`` also uses LLM records nobody reviewed yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ked.errors import UserError

DEFAULT_DB = Path("ked.duckdb")
DEFAULT_LLM_MODEL = "gpt-4o-mini"
KNOWLEDGE_STATUSES = ("accepted", "proposed", "rejected")
DEFAULT_USABLE_STATUSES = ("accepted",)


class ProviderNotConfiguredError(UserError, RuntimeError):
    """Knowledge generation was asked for but no LLM server is configured."""


class InvalidSettingError(UserError, ValueError):
    """A setting has a value ked does not know."""


def usable_statuses(value: str | Iterable[str]) -> tuple[str, ...]:
    """Knowledge statuses from ``accepted,proposed`` or a list, in canonical order."""
    items = [value] if isinstance(value, str) else list(value)
    wanted = {part.strip().lower() for item in items for part in item.split(",") if part.strip()}
    unknown = sorted(wanted - set(KNOWLEDGE_STATUSES))
    if unknown or not wanted:
        raise InvalidSettingError(
            f"unknown knowledge status {', '.join(unknown) or '(none given)'}; "
            f"use one or more of {', '.join(KNOWLEDGE_STATUSES)}"
        )
    return tuple(s for s in KNOWLEDGE_STATUSES if s in wanted)


@dataclass(frozen=True)
class Settings:
    db: Path
    base_url: str | None
    llm_model: str
    api_key: str | None = field(default=None, repr=False)
    knowledge_statuses: tuple[str, ...] = DEFAULT_USABLE_STATUSES

    @classmethod
    def resolve(
        cls,
        *,
        db: str | Path | None = None,
        base_url: str | None = None,
        llm_model: str | None = None,
        knowledge_statuses: Iterable[str] | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> Settings:
        """Settings from flags (arguments), else ``env``, else defaults."""
        return cls(
            db=Path(db or env.get("KED_DB") or DEFAULT_DB).expanduser(),
            base_url=base_url or env.get("OPENAI_BASE_URL") or None,
            llm_model=llm_model or env.get("KED_MODEL") or DEFAULT_LLM_MODEL,
            api_key=env.get("OPENAI_API_KEY") or None,
            knowledge_statuses=usable_statuses(
                knowledge_statuses or env.get("KED_USE_KNOWLEDGE") or DEFAULT_USABLE_STATUSES
            ),
        )

    @property
    def provider_configured(self) -> bool:
        """True when an API key or a server URL is set."""
        return bool(self.api_key or self.base_url)

    def require_provider(self) -> None:
        if not self.provider_configured:
            raise ProviderNotConfiguredError(
                "no LLM provider configured: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL "
                "(any OpenAI-compatible server, e.g. vLLM or llama.cpp), or use the curated "
                "pack ('ked knowledge import-pack')"
            )
