"""Text views of a knowledge record: the texts that get embedded as label vectors.

Each view is a jinja2 template in ``prompts/views/``. A view's text is a deterministic
function of the record and the template source.
"""

from __future__ import annotations

import re
from functools import lru_cache

from knowledge.prompting import TemplateSet
from knowledge.schema import DiagnosisKnowledge

VIEWS: tuple[str, ...] = ("name", "summary", "rhythm", "morphology", "full")
_SPACES = re.compile(r"\s+")
_DOUBLE_STOP = re.compile(r"\.(\s*\.)+")


@lru_cache(maxsize=1)
def _templates() -> TemplateSet:
    return TemplateSet()


def check_view(view: str) -> str:
    """Return ``view`` if it is known, else raise ``ValueError`` listing the views."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    return view


def view_template_sha256(view: str) -> str:
    """SHA-256 of the view's template source (identifies how its texts were made)."""
    return _templates().source_sha256(f"views/{check_view(view)}.j2")


def render_view(record: DiagnosisKnowledge, view: str) -> str:
    """The text of one view of a record, on one line with single spaces."""
    text = _templates().render(f"views/{check_view(view)}.j2", record=record).text
    return _DOUBLE_STOP.sub(".", _SPACES.sub(" ", text)).strip()
