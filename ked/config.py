"""Configuration: command-line flags over environment variables over defaults.

| setting  | flag         | environment       | default          |
|----------|--------------|-------------------|------------------|
| database | ``--db``     | ``KED_DB``        | ``./ked.duckdb`` |
| server   | ``--base-url``| ``OPENAI_BASE_URL``| OpenAI's API    |
| model    | ``--model``  | ``KED_MODEL``     | ``gpt-4o-mini``  |
| API key  | (none)       | ``OPENAI_API_KEY``| none             |

The API key is read from the environment only, so it never appears in shell history,
process lists, the database or logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ked.errors import UserError

DEFAULT_DB = Path("ked.duckdb")
DEFAULT_LLM_MODEL = "gpt-4o-mini"


class ProviderNotConfiguredError(UserError, RuntimeError):
    """Knowledge generation was asked for but no LLM server is configured."""


@dataclass(frozen=True)
class Settings:
    db: Path
    base_url: str | None
    llm_model: str
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(
        cls,
        *,
        db: str | Path | None = None,
        base_url: str | None = None,
        llm_model: str | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> Settings:
        """Settings from flags (arguments), else ``env``, else defaults."""
        return cls(
            db=Path(db or env.get("KED_DB") or DEFAULT_DB).expanduser(),
            base_url=base_url or env.get("OPENAI_BASE_URL") or None,
            llm_model=llm_model or env.get("KED_MODEL") or DEFAULT_LLM_MODEL,
            api_key=env.get("OPENAI_API_KEY") or None,
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
