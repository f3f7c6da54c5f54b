"""``ked report``: the files of the static HTML site, self-contained, with real inputs.

The same site is opened in a real Chromium by tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from encoders.report import ReportInputError, read_evaluation, read_explanations, write_site
from encoders.report.knowledge_pages import diagnosis_pages
from kb_store.store import KnowledgeBase
from knowledge.diff import diff_records
from tests.conftest import REPO
from tests.support.cli import run_ked
from tests.support.report_inputs import EDITED, ReportInputs, report_inputs

EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)""", re.I)


@pytest.fixture
def inputs(
    embedded_kb: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> ReportInputs:
    return report_inputs(embedded_kb, tmp_path_factory.mktemp("report"), capsys)


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_site_has_every_page_and_needs_nothing_from_elsewhere(inputs: ReportInputs) -> None:
    pages = _pages(inputs.site)
    names = {p.relative_to(inputs.site).as_posix() for p in pages}
    assert {"index.html", "label-space.html", "evaluation.html", "explanations.html"} <= names
    with KnowledgeBase(inputs.db, read_only=True) as kb:
        expected = {page.href for page in diagnosis_pages(kb)}
        with_knowledge = {d.name for d, version, _ in kb.diagnoses() if version is not None}
    assert expected and expected <= names and len(expected) == len(with_knowledge)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<script" not in html.lower(), page
        for match in EXTERNAL.finditer(html):  # only data: URIs may name a scheme
            assert html[match.end() - 5 : match.end()].lower() == "data:", (page, match[0])
        for src in re.findall(r'<img src="([^"]*)"', html):
            assert src.startswith("data:image/png;base64,"), page
    assert not list(inputs.site.rglob(".*.tmp")), "temporary files left behind"


def test_diagnosis_page_has_provenance_every_version_and_the_diff(inputs: ReportInputs) -> None:
    with KnowledgeBase(inputs.db, read_only=True) as kb:
        diagnosis = kb.resolve(EDITED)
        assert diagnosis is not None
        first, second = kb.history(diagnosis.id)
        page = next(p for p in diagnosis_pages(kb) if p.diagnosis.id == diagnosis.id)
    html = (inputs.site / page.href).read_text(encoding="utf-8")
    changes = diff_records(first.record, second.record)
    assert {c.path for c in changes} == {"rhythm.rate_bpm", "leads", "caveats"}
    assert len(re.findall(r'<tr class="(?:added|removed|changed)">', html)) == len(changes)
    for change in changes:
        assert f"<code>{change.path}</code>" in html
    assert 'id="v1"' in html and 'id="v2"' in html and "60–170" in html
    # the curated version is accepted and used; the edit waits for review
    assert (first.status, second.status, page.usable) == ("accepted", "proposed", 1)
    statuses = re.findall(r'<td><span class="status">(\w+)</span>( \(used\))?</td>', html)
    assert statuses == [("proposed", ""), ("accepted", " (used)")]
    assert first.provenance.pack_version and first.provenance.pack_version in html
    assert first.content_sha256 in html and second.content_sha256 in html
    index = (inputs.site / "index.html").read_text(encoding="utf-8")
    assert f'href="{page.href}"' in index


def test_evaluation_page_shows_report_json_and_the_plots(inputs: ReportInputs) -> None:
    report = json.loads((inputs.eval / "report.json").read_text())
    html = (inputs.site / "evaluation.html").read_text(encoding="utf-8")
    for name, condition in report["conditions"].items():
        assert f'<tr data-condition="{name}">' in html
        macro = condition["macro"]["auroc"]
        assert f'{macro["value"]:.3f}</span> <span class="ci">[{macro["low"]:.3f}' in html
    first = next(iter(report["conditions"].values()))
    assert html.count("<tr data-label=") == len(first["labels"]) == report["n_labels"]
    assert html.count('<img src="data:image/png') == 2  # roc.png and auroc.png


def test_templates_ship_as_declared_package_data() -> None:
    templates = files("encoders.report") / "templates"
    names = {item.name for item in templates.iterdir()}
    assert {"base.html.j2", "index.html.j2", "diagnosis.html.j2", "style.css"} <= names
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["encoders"]
    declared = {p for pattern in patterns for p in (REPO / "encoders").glob(pattern)}
    assert {REPO / "encoders" / "report" / "templates" / name for name in names} <= declared


def test_bad_inputs_are_one_line_errors_and_write_nothing(
    inputs: ReportInputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_json = tmp_path / "explain" / "explain-1-x.json"
    not_json.parent.mkdir()
    not_json.write_text("{not json")
    out = tmp_path / "site"
    for args, message in [
        (("--eval", str(inputs.explain)), "no report.json in"),
        (("--explain", str(inputs.eval)), "no explain-*.json in"),
        (("--explain", str(not_json.parent)), "cannot be read as JSON"),
        (("--vocab", "ptbxl", "--labels", "AFIB"), "at most one of --vocab and --labels"),
    ]:
        code, _, err = run_ked(capsys, "--db", str(inputs.db), "report", "--out", str(out), *args)
        assert code == 2 and message in err, err
        assert "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ReportInputError, match="not a ked explanation"):
        not_json.write_text(json.dumps({"label": "x"}))
        read_explanations(not_json.parent)


def test_library_writes_knowledge_pages_only_without_other_inputs(
    inputs: ReportInputs, tmp_path: Path
) -> None:
    heard: list[str] = []
    with KnowledgeBase(inputs.db, read_only=True) as kb:
        site = write_site(tmp_path / "site", kb=kb, on_page=heard.append)
    assert heard == site.pages and "index.html" in heard
    assert not (tmp_path / "site" / "evaluation.html").exists()
    index = site.index.read_text(encoding="utf-8")
    assert "Evaluation: not included" in index and 'href="evaluation.html"' not in index
    assert read_evaluation(inputs.eval).labels[0] in (inputs.eval / "report.md").read_text()
