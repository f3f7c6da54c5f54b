"""House rules on imports: each stage imports only the stages below it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# package (or module prefix) -> module prefixes it must never import
FORBIDDEN = {
    "encoders/inference": ("encoders.training",),
    "encoders/models": ("encoders.training", "encoders.inference"),
    "encoders/ecg": ("encoders.training", "encoders.inference", "kb_store", "knowledge.llm"),
    "kb_store": ("encoders", "knowledge.generate", "knowledge.llm", "ked.cli"),
    "knowledge": ("encoders", "ked.cli"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_stage_imports_a_stage_above_it() -> None:
    broken = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for module in imported_modules(path):
                if module.startswith(forbidden):
                    broken.append(f"{path.relative_to(REPO)} imports {module}")
    assert not broken, "\n".join(broken)
