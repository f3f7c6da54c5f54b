"""``ked report``: the files of the static HTML site, self-contained, with real report_inputs.

The knowledge pages are tested on the curated knowledge base; the whole site (evaluation, label
space, explanations) on the outputs of real ``ked eval`` and ``ked explain`` runs (slow: it
pretrains a small model first), which tests/test_report_browser.py also opens in Chromium.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from encoders.report import ReportInputError, Site, read_explanations, write_site
from encoders.report.knowledge_pages import diagnosis_pages
from kb_store.store import KnowledgeBase
from knowledge.diff import diff_records
from tests.conftest import REPO
from tests.support.cli import run_ked
from tests.support.report_inputs import EDITED, ReportInputs, edit_one_diagnosis

pytest_plugins = ("tests.support.report_fixtures",)  # the report_inputs fixture

# an attribute that names a scheme or a protocol-relative address: only data: URIs may
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)""", re.I)
PAGES = ("index.html", "label-space.html", "evaluation.html", "explanations.html")


@pytest.fixture
def knowledge_site(kb_copy: Path, tmp_path: Path) -> tuple[Path, Site, list[str]]:
    """(knowledge base, site, pages heard) of the curated pack with one diagnosis edited."""
    edit_one_diagnosis(kb_copy)
    heard: list[str] = []
    with KnowledgeBase(kb_copy, read_only=True) as kb:
        site = write_site(tmp_path / "site", kb=kb, on_page=heard.append)
    return kb_copy, site, heard


def assert_self_contained(site: Path) -> None:
    """No script, no address outside the site, images as data: URIs, no temporary files."""
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        assert "<script" not in html.lower(), page
        for match in EXTERNAL.finditer(html):
            assert html[match.end() - 5 : match.end()].lower() == "data:", (page, match[0])
        for src in re.findall(r'<img src="([^"]*)"', html):
            assert src.startswith("data:image/png;base64,"), page
    assert not list(site.rglob(".*.tmp")), "temporary files left behind"


def test_templates_ship_as_declared_package_data() -> None:
    templates = files("encoders.report") / "templates"
    names = {item.name for item in templates.iterdir()}
    assert {"base.html.j2", "index.html.j2", "diagnosis.html.j2", "style.css"} <= names
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["encoders"]
    declared = {p for pattern in patterns for p in (REPO / "encoders").glob(pattern)}
    assert {REPO / "encoders" / "report" / "templates" / name for name in names} <= declared


def test_knowledge_site_has_a_page_per_diagnosis_and_needs_nothing_else(
    knowledge_site: tuple[Path, Site, list[str]],
) -> None:
    db, site, heard = knowledge_site
    with KnowledgeBase(db, read_only=True) as kb:
        with_knowledge = [d for d, version, _ in kb.diagnoses() if version is not None]
        hrefs = [page.href for page in diagnosis_pages(kb)]
    assert len(hrefs) == len(with_knowledge) == len(set(hrefs)) > 200
    assert heard == site.pages == ["index.html", *hrefs]
    assert all((site.out / name).is_file() for name in site.pages)
    index = site.index.read_text(encoding="utf-8")
    assert all(f'href="{href}"' in index for href in hrefs)
    assert "Evaluation: not included" in index and 'href="evaluation.html"' not in index
    assert not any((site.out / name).exists() for name in PAGES[1:])
    assert_self_contained(site.out)


def test_diagnosis_page_has_provenance_every_version_status_and_the_diff(
    knowledge_site: tuple[Path, Site, list[str]],
) -> None:
    db, site, _ = knowledge_site
    with KnowledgeBase(db, read_only=True) as kb:
        diagnosis = kb.resolve(EDITED)
        assert diagnosis is not None
        first, second = kb.history(diagnosis.id)
        page = next(p for p in diagnosis_pages(kb) if p.diagnosis.id == diagnosis.id)
    html = (site.out / page.href).read_text(encoding="utf-8")
    changes = diff_records(first.record, second.record)
    assert {c.path for c in changes} == {"rhythm.rate_bpm", "leads", "caveats"}
    assert len(re.findall(r'<tr class="(?:added|removed|changed)">', html)) == len(changes)
    for change in changes:
        assert f"<code>{change.path}</code>" in html
    assert 'id="v1"' in html and 'id="v2"' in html and "60–170" in html
    assert first.provenance.pack_version and first.provenance.pack_version in html
    assert first.content_sha256 in html and second.content_sha256 in html
    # the curated version is accepted and used; the edit waits for review
    assert (first.status, second.status, page.usable) == ("accepted", "proposed", 1)
    statuses = re.findall(r'<td><span class="status">(\w+)</span>( \(used\))?</td>', html)
    assert statuses == [("proposed", ""), ("accepted", " (used)")]


def test_bad_inputs_are_one_line_errors_and_write_nothing(
    kb_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir()
    broken.mkdir()
    (broken / "explain-1-x.json").write_text("{not json")
    out = tmp_path / "site"
    for args, message in [
        (("--eval", str(empty)), "no report.json in"),
        (("--explain", str(empty)), "no explain-*.json or explain-*.png in"),
        (("--explain", str(broken)), "cannot be read as JSON"),
        (("--explain", str(tmp_path / "nowhere")), "no folder"),
        (("--vocab", "ptbxl", "--labels", "AFIB"), "at most one of --vocab and --labels"),
    ]:
        code, _, err = run_ked(capsys, "--db", str(kb_copy), "report", "--out", str(out), *args)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()
    (broken / "explain-1-x.json").write_text(json.dumps({"label": "x"}))
    with pytest.raises(ReportInputError, match="not a ked explanation"):
        read_explanations(broken)


@pytest.mark.slow
def test_whole_site_from_real_eval_and_explain_outputs(report_inputs: ReportInputs) -> None:
    assert all((report_inputs.site / name).is_file() for name in PAGES)
    assert_self_contained(report_inputs.site)
    space = (report_inputs.site / "label-space.html").read_text(encoding="utf-8")
    assert space.count('<tr><td><a href="knowledge/') == 10  # nearest label of each, linked
    explained = (report_inputs.site / "explanations.html").read_text(encoding="utf-8")
    explanation = json.loads(next(report_inputs.explain.glob("explain-*.json")).read_text())
    assert f"{explanation['label']} <span" in explained
    assert explained.count('<img src="data:image/png') == 1


def test_a_rerun_replaces_the_site_and_removes_only_its_own_stale_pages(
    knowledge_site: tuple[Path, Site, list[str]],
) -> None:
    db, site, _ = knowledge_site
    renamed = site.out / "knowledge" / "1-an-old-name.html"
    renamed.write_text("<p>a page an earlier run wrote</p>")
    mine = site.out / "notes.html"
    mine.write_text("<p>the user's own file</p>")
    listed = site.out / ".ked-report-pages"
    listed.write_text(listed.read_text() + "knowledge/1-an-old-name.html\n")
    with KnowledgeBase(db, read_only=True) as kb:
        again = write_site(site.out, kb=kb)
    assert again.pages == site.pages and not renamed.exists() and mine.exists()
    assert listed.read_text().splitlines() == site.pages


@pytest.mark.slow
def test_a_plot_without_its_json_is_shown_alone(
    report_inputs: ReportInputs, tmp_path: Path
) -> None:
    """As ``ked demo`` writes it: the explanation's PNG, no JSON."""
    png = next(report_inputs.explain.glob("explain-*.png"))
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / png.name).write_bytes(png.read_bytes())
    [alone] = read_explanations(tmp_path / "plots")
    assert alone.explanation is None and alone.plot is not None
    with KnowledgeBase(report_inputs.db, read_only=True) as kb:
        site = write_site(tmp_path / "site", kb=kb, explanations=[alone])
    html = (site.out / "explanations.html").read_text(encoding="utf-8")
    assert f'<section id="{png.stem}">' in html and f'src="{alone.plot}"' in html


@pytest.mark.slow
def test_evaluation_page_shows_report_json_and_the_plots(report_inputs: ReportInputs) -> None:
    report = json.loads((report_inputs.eval / "report.json").read_text())
    html = (report_inputs.site / "evaluation.html").read_text(encoding="utf-8")
    for name, condition in report["conditions"].items():
        assert f'<tr data-condition="{name}">' in html
        macro = condition["macro"]["auroc"]
        assert f'{macro["value"]:.3f}</span> <span class="ci">[{macro["low"]:.3f}' in html
    first = next(iter(report["conditions"].values()))
    assert html.count("<tr data-label=") == len(first["labels"]) == report["n_labels"]
    assert html.count('<img src="data:image/png') == 2  # roc.png and auroc.png
