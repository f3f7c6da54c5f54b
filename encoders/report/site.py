"""``write_site``: the report as static HTML pages that need no server, network or script.

Pages (paths from the site's root, links between them relative):

- ``index.html``: what the site holds, and every diagnosis with its current version;
- ``knowledge/<id>-<name>.html``: a diagnosis's record, names and codes, and every version
  with its provenance and its field-by-field changes from the version before;
- ``label-space.html``: the cosine heatmap of the label vectors and the most confusable pairs;
- ``evaluation.html``: a ``ked eval`` report (per-label AUROC/AUPRC with intervals) and plots;
- ``explanations.html``: ``ked explain`` outputs with their plots.

CSS is inline and images are ``data:`` URIs. Every page is rendered before any is written, and
each file is written atomically, so a failed run leaves the previous site as it was. The site's
``.ked-report-pages`` lists the pages written; a later run into the same folder removes those of
its pages it no longer writes (a renamed diagnosis, an evaluation left out), and no other file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from encoders.evaluation.label_space import DEFAULT_THRESHOLD, LabelSpace
from encoders.report.inputs import EvaluationInput, ExplanationInput, data_uri
from encoders.report.knowledge_pages import diagnosis_pages, label_links
from kb_store.store import KnowledgeBase

log = logging.getLogger(__name__)

PAGE_LIST = ".ked-report-pages"
INDEX, LABEL_SPACE, EVALUATION, EXPLANATIONS = (
    "index.html",
    "label-space.html",
    "evaluation.html",
    "explanations.html",
)


@dataclass(frozen=True)
class Site:
    """A written site: its folder and its pages (paths from the folder)."""

    out: Path
    pages: list[str]
    diagnoses: int

    @property
    def index(self) -> Path:
        return self.out / INDEX


def _number(value: float) -> str:
    """A record's number as written: 60, not 60.0."""
    return f"{value:g}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("encoders.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["number"] = _number
    return env


def _write(path: Path, text: str) -> None:
    """Write ``path`` atomically: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _remove_stale(out: Path, pages: Sequence[str]) -> None:
    """Remove the pages an earlier run listed and this one does not write."""
    listed = out / PAGE_LIST
    if not listed.is_file():
        return
    for name in set(listed.read_text(encoding="utf-8").splitlines()) - set(pages):
        page = out / name
        if name.endswith(".html") and page.resolve().is_relative_to(out.resolve()):
            page.unlink(missing_ok=True)
            log.info("removed %s, which this report no longer has", page)


def _heatmap(space: LabelSpace) -> str:
    with tempfile.TemporaryDirectory(prefix="ked-report-") as folder:
        return data_uri(space.write_heatmap(Path(folder) / "heatmap.png"))


def _linked_labels(space: LabelSpace | None, evaluation: EvaluationInput | None) -> list[str]:
    labels = list(space.names) if space is not None else []
    return labels + (evaluation.labels if evaluation is not None else [])


def write_site(
    out: Path,
    *,
    kb: KnowledgeBase,
    evaluation: EvaluationInput | None = None,
    explanations: Sequence[ExplanationInput] = (),
    label_space: LabelSpace | None = None,
    top_pairs: int = 20,
    threshold: float = DEFAULT_THRESHOLD,
    on_page: Callable[[str], None] | None = None,
) -> Site:
    """Write the report into ``out`` (created if needed); ``on_page`` hears of each page
    rendered (all are rendered before the first is written)."""
    env = _environment()
    diagnoses = diagnosis_pages(kb)
    links = label_links(kb, _linked_labels(label_space, evaluation), diagnoses)
    sections = {
        LABEL_SPACE: label_space is not None,
        EVALUATION: evaluation is not None,
        EXPLANATIONS: bool(explanations),
    }
    common: dict[str, Any] = {"sections": sections, "links": links, "kb_path": str(kb.path)}
    pages: dict[str, str] = {}

    def render(name: str, template: str, **context: Any) -> None:
        pages[name] = env.get_template(template).render(**common, **context)
        if on_page is not None:
            on_page(name)

    render(
        INDEX,
        "index.html.j2",
        root="",
        diagnoses=diagnoses,
        all_diagnoses=kb.diagnoses(),
        by_id={page.diagnosis.id: page for page in diagnoses},
        evaluation=evaluation,
        label_space=label_space,
        explanations=explanations,
    )
    for page in diagnoses:
        render(page.href, "diagnosis.html.j2", root="../", page=page)
    if label_space is not None:
        render(
            LABEL_SPACE,
            "label_space.html.j2",
            root="",
            space=label_space,
            stats=label_space.stats(threshold),
            pairs=label_space.pairs(top_pairs),
            nearest=label_space.nearest(),
            threshold=threshold,
            heatmap=_heatmap(label_space),
        )
    if evaluation is not None:
        render(
            EVALUATION,
            "evaluation.html.j2",
            root="",
            evaluation=evaluation,
            report=evaluation.report,
        )
    if explanations:
        render(EXPLANATIONS, "explanations.html.j2", root="", explanations=explanations)
    out = Path(out)
    for name, html in pages.items():  # all rendered: nothing is written if one fails
        _write(out / name, html)
    _remove_stale(out, list(pages))
    _write(out / PAGE_LIST, "".join(f"{name}\n" for name in pages))
    log.info("wrote %d pages to %s", len(pages), out)
    return Site(out, list(pages), len(diagnoses))
