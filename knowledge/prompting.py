"""Rendering the jinja2 prompt templates in ``prompts/``, sandboxed and strict."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from knowledge.leads import STANDARD_LEADS
from knowledge.schema import DiagnosisKnowledge
from prompts import PROMPTS_DIR


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _describe_range(value: Any, unit: str) -> str:
    return str(value.describe(unit))


@dataclass(frozen=True)
class RenderedPrompt:
    template: str
    text: str
    template_sha256: str


class TemplateSet:
    """Templates under one folder, rendered in a sandbox where undefined names are errors."""

    def __init__(self, folder: str | Path = PROMPTS_DIR) -> None:
        self.folder = Path(folder)
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.folder)),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["describe"] = _describe_range

    def source_sha256(self, name: str) -> str:
        """SHA-256 of a template's source: the identity of every prompt rendered from it."""
        return sha256_text((self.folder / name).read_text(encoding="utf-8"))

    def render(self, name: str, **context: Any) -> RenderedPrompt:
        text = self.env.get_template(name).render(**context)
        return RenderedPrompt(name, text.strip() + "\n", self.source_sha256(name))


class KnowledgePrompts:
    """The system, user and repair prompts of knowledge generation."""

    SYSTEM = "knowledge/system.j2"
    USER = "knowledge/user.j2"
    REPAIR = "knowledge/repair.j2"
    EXAMPLE = "knowledge/example.json"

    def __init__(self, templates: TemplateSet | None = None) -> None:
        self.templates = templates or TemplateSet()

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        return DiagnosisKnowledge.model_json_schema()

    @cached_property
    def system(self) -> RenderedPrompt:
        example_path = self.templates.folder / self.EXAMPLE
        example = DiagnosisKnowledge.model_validate_json(example_path.read_text(encoding="utf-8"))
        return self.templates.render(
            self.SYSTEM,
            schema=json.dumps(self.json_schema, separators=(",", ":")),
            example=example.model_dump_json(),
            leads=STANDARD_LEADS,
        )

    def user(self, label: str, context: str | None = None) -> RenderedPrompt:
        return self.templates.render(self.USER, label=label, context=context)

    def repair(self, label: str, errors: list[str]) -> RenderedPrompt:
        return self.templates.render(self.REPAIR, label=label, errors=errors)

    @cached_property
    def sha256(self) -> str:
        """One identifier for the whole prompt set (templates, worked example and schema)."""
        parts = [
            self.templates.source_sha256(name)
            for name in (self.SYSTEM, self.USER, self.REPAIR, self.EXAMPLE)
        ]
        parts.append(sha256_text(json.dumps(self.json_schema, sort_keys=True)))
        return sha256_text("\n".join(parts))
