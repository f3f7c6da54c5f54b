"""Rendering the jinja2 prompt templates in ``prompts/``, sandboxed and strict.

Two variants of the knowledge prompts: ``full`` pastes the JSON schema and a worked example
(11,700 characters); ``compact`` gives the schema as a short outline of fields and types and
no example (4,100 characters), for small local models with small contexts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from knowledge.leads import STANDARD_LEADS
from knowledge.schema import DiagnosisKnowledge
from prompts import PROMPTS_DIR


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PromptVariant = Literal["full", "compact"]
PROMPT_VARIANTS: tuple[PromptVariant, ...] = ("full", "compact")


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
    """The system, user and repair prompts of knowledge generation, in one variant."""

    SYSTEM: ClassVar[dict[PromptVariant, str]] = {
        "full": "knowledge/system.j2",
        "compact": "knowledge/system_compact.j2",
    }
    RULES = "knowledge/rules.j2"
    USER = "knowledge/user.j2"
    REPAIR = "knowledge/repair.j2"
    EXAMPLE = "knowledge/example.json"

    def __init__(
        self, templates: TemplateSet | None = None, variant: PromptVariant = "full"
    ) -> None:
        if variant not in self.SYSTEM:
            raise ValueError(f"unknown prompt variant {variant!r}; choose from {PROMPT_VARIANTS}")
        self.templates = templates or TemplateSet()
        self.variant = variant

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        return DiagnosisKnowledge.model_json_schema()

    @cached_property
    def schema_text(self) -> str:
        """The schema as the system prompt states it: JSON (full) or an outline (compact)."""
        if self.variant == "compact":
            return schema_outline(self.json_schema)
        return json.dumps(self.json_schema, separators=(",", ":"))

    @cached_property
    def system(self) -> RenderedPrompt:
        example_path = self.templates.folder / self.EXAMPLE
        example = DiagnosisKnowledge.model_validate_json(example_path.read_text(encoding="utf-8"))
        return self.templates.render(
            self.SYSTEM[self.variant],
            schema=self.schema_text,
            schema_kind="JSON schema" if self.variant == "full" else "fields listed",
            example=example.model_dump_json(),
            leads=STANDARD_LEADS,
        )

    def user(self, label: str, context: str | None = None) -> RenderedPrompt:
        return self.templates.render(self.USER, label=label, context=context)

    def repair(
        self, label: str, errors: list[str], *, truncated: bool = False, max_tokens: int = 0
    ) -> RenderedPrompt:
        """The turn that sends an answer back: its errors, and after a cut-off answer a
        request for a complete, shorter one."""
        return self.templates.render(
            self.REPAIR, label=label, errors=errors, truncated=truncated, max_tokens=max_tokens
        )

    @cached_property
    def sha256(self) -> str:
        """One identifier for the variant's prompt set (templates, example and schema text)."""
        names = (self.SYSTEM[self.variant], self.RULES, self.USER, self.REPAIR, self.EXAMPLE)
        parts = [self.templates.source_sha256(name) for name in names]
        parts.append(sha256_text(self.schema_text))
        return sha256_text("\n".join(parts))


def schema_outline(schema: dict[str, Any]) -> str:
    """A JSON schema as short lines: the record's fields, then one block per object type.

    ``name?: type  // description``; ``?`` marks an optional field, enums are listed inline.
    """
    lines: list[str] = []

    def type_of(node: dict[str, Any]) -> str:
        if "$ref" in node:
            return str(node["$ref"]).rsplit("/", 1)[1]
        if "anyOf" in node:
            return " | ".join(type_of(option) for option in node["anyOf"])
        if "enum" in node:
            return " | ".join(json.dumps(value) for value in node["enum"])
        if node.get("type") == "array":
            item = type_of(node.get("items", {}))
            return f"({item})[]" if " | " in item else f"{item}[]"
        return str(node.get("type", "any"))

    def block(name: str, node: dict[str, Any]) -> None:
        required = set(node.get("required", []))
        lines.append(f"{name}:")
        for field, sub in node.get("properties", {}).items():
            mark = "" if field in required else "?"
            note = f"  // {sub['description']}" if "description" in sub else ""
            lines.append(f"  {field}{mark}: {type_of(sub)}{note}")

    block("record", schema)
    for name, node in schema.get("$defs", {}).items():
        if node.get("type") == "object":
            block(name, node)
        else:
            lines.append(f"{name}: {type_of({k: v for k, v in node.items() if k != 'title'})}")
    return "\n".join(lines)
