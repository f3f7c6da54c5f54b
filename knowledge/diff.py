"""Field-by-field differences between two versions of a diagnosis's knowledge record.

Paths are dotted (``rhythm.rate_bpm.max``). Lists of plain values (leads, synonyms, codes,
caveats) are compared as collections: each added or removed item is one change, and a list
whose items only moved (the ordered ``criteria``) is one ``changed`` entry. Lists of records
are matched by their identity (``territories`` by territory, ``differentials`` by name,
``codes.other`` by system and code) and compared inside, e.g. ``territories[inferior].leads``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from knowledge.schema import DiagnosisKnowledge

JsonValue = Any
_SHOWN_CHARS = 80

# Lists of records and the key that identifies an item, by dotted path.
_KEYED_LISTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "territories": lambda item: str(item["territory"]),
    "differentials": lambda item: str(item["name"]).casefold(),
    "codes.other": lambda item: f"{item['system']}:{item['code']}",
}


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class FieldChange:
    """One difference: ``old`` is ``None`` when added, ``new`` is ``None`` when removed."""

    kind: ChangeKind
    path: str
    old: JsonValue = None
    new: JsonValue = None

    def describe(self) -> str:
        """One line, e.g. ``changed rhythm.rate_bpm.max: 100 -> 150``."""
        if self.kind is ChangeKind.ADDED:
            return f"added {self.path}: {_show(self.new)}"
        if self.kind is ChangeKind.REMOVED:
            return f"removed {self.path}: {_show(self.old)}"
        return f"changed {self.path}: {_show(self.old)} -> {_show(self.new)}"


def diff_records(old: DiagnosisKnowledge, new: DiagnosisKnowledge) -> list[FieldChange]:
    """Every difference from ``old`` to ``new``, in schema field order."""
    return _diff(old.model_dump(mode="json"), new.model_dump(mode="json"), "")


def _diff(old: JsonValue, new: JsonValue, path: str) -> list[FieldChange]:
    if old == new:
        return []
    if isinstance(old, list) or isinstance(new, list):
        old_items, new_items = old or [], new or []
        if path in _KEYED_LISTS:
            return _diff_keyed(old_items, new_items, path, _KEYED_LISTS[path])
        return _diff_items(old_items, new_items, path)
    if old is None:
        return [FieldChange(ChangeKind.ADDED, path, new=new)]
    if new is None:
        return [FieldChange(ChangeKind.REMOVED, path, old=old)]
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            changes += _diff(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return changes
    return [FieldChange(ChangeKind.CHANGED, path, old=old, new=new)]


def _diff_items(old: list[JsonValue], new: list[JsonValue], path: str) -> list[FieldChange]:
    removed = [item for item in old if item not in new]
    added = [item for item in new if item not in old]
    if not removed and not added:  # same items, another order
        return [FieldChange(ChangeKind.CHANGED, path, old=old, new=new)]
    return [FieldChange(ChangeKind.REMOVED, path, old=item) for item in removed] + [
        FieldChange(ChangeKind.ADDED, path, new=item) for item in added
    ]


def _diff_keyed(
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
    path: str,
    key: Callable[[dict[str, Any]], str],
) -> list[FieldChange]:
    old_by_key = {key(item): item for item in old}
    new_by_key = {key(item): item for item in new}
    changes: list[FieldChange] = []
    for k in [*old_by_key, *(k for k in new_by_key if k not in old_by_key)]:
        changes += _diff(old_by_key.get(k), new_by_key.get(k), f"{path}[{k}]")
    return changes


def _show(value: JsonValue) -> str:
    if isinstance(value, dict) and value and set(value) <= {"min", "max"}:
        low, high = value.get("min"), value.get("max")
        if low is not None and high is not None:
            return f"{low:g}-{high:g}"
        return f">= {low:g}" if low is not None else f"<= {high:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value) if isinstance(value, str | dict) else str(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
