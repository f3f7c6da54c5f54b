"""The ``ked report`` site in a real headless Chromium (the distribution's, driven by Playwright):
every page loads without console errors or requests beyond the site, every link resolves to a
file and anchor of the site, a screenshot is taken, and the per-label table's numbers are those
of the evaluation's report.json.

Skips, saying why, only where no Chromium binary is found (``apt-get install chromium``). Slow:
the site shows a real evaluation, of a small model pretrained first (tests/support/report_inputs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.report_inputs import ReportInputs

pytest_plugins = ("tests.support.report_fixtures",)  # the report_inputs fixture

pytestmark = pytest.mark.slow
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
NUMBERS = re.compile(r"-?\d+\.\d+")
# What a test reads of a loaded page, in one round trip: title, element ids, links (resolved
# against the page) and whether each image decoded.
SEEN = """() => ({
    title: document.title,
    ids: Array.from(document.querySelectorAll('[id]'), node => node.id),
    hrefs: Array.from(document.querySelectorAll('a[href]'), node => node.href),
    images: Array.from(document.images, node => node.complete && node.naturalWidth > 0),
})"""


def chromium_binary() -> str | None:
    """The Chromium to drive: ``KED_CHROMIUM``, else the first candidate on PATH."""
    explicit = os.environ.get("KED_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip(
            "no Chromium binary found (install the distribution's: apt-get install chromium; "
            "or set KED_CHROMIUM)"
        )
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield launched
        launched.close()


class Visit:
    """One page load: its console messages, page errors and requests, recorded by listeners."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed request {r.url}"))
        page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")


def _local_path(url: str) -> tuple[Path, str]:
    parts = urlsplit(url)
    assert parts.scheme == "file", f"link out of the site: {url}"
    return Path(unquote(parts.path)), unquote(parts.fragment)


def test_every_page_loads_cleanly_and_every_link_resolves(
    browser: Browser, report_inputs: ReportInputs, tmp_path: Path
) -> None:
    site = report_inputs.site.resolve()
    pages = sorted(site.rglob("*.html"))
    ids: dict[Path, set[str]] = {}
    links: list[tuple[Path, str]] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    visit = Visit(page)
    for path in pages:
        response = page.goto(path.as_uri(), wait_until="load")
        assert response is not None and response.ok, path
        seen = page.evaluate(SEEN)
        assert seen["title"].endswith("ked report"), path
        assert all(seen["images"]), f"broken image on {path}"
        ids[path] = set(seen["ids"])
        links += [(path, href) for href in seen["hrefs"]]
    assert not visit.problems, visit.problems
    outside = [u for u in visit.requests if not u.startswith(("file://", "data:"))]
    assert not outside, f"requests beyond the site: {outside[:5]}"
    assert len(links) > len(pages)
    for source, href in links:
        target, fragment = _local_path(href)
        assert target in ids, f"{source.name}: link to a missing page {href}"
        assert not fragment or fragment in ids[target], f"{source.name}: no anchor {href}"
    page.goto((site / "evaluation.html").as_uri())
    shot = page.screenshot(path=tmp_path / "evaluation.png", full_page=True)
    assert (
        shot[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "evaluation.png").stat().st_size > 10_000
    )
    page.close()


def _shown(estimate: dict[str, Any]) -> list[float]:
    """The numbers the page should show for an estimate: value, low, high at 3 decimals."""
    if estimate["value"] is None:
        return []
    keys = ("value", "low", "high") if estimate["low"] is not None else ("value",)
    return [round(estimate[k], 3) for k in keys]


def test_per_label_table_shows_the_numbers_of_report_json(
    browser: Browser, report_inputs: ReportInputs
) -> None:
    report = json.loads((report_inputs.eval / "report.json").read_text())
    page = browser.new_page()
    page.goto((report_inputs.site.resolve() / "evaluation.html").as_uri())
    rows = page.eval_on_selector_all(
        "#per-label-table tbody tr",
        """rows => rows.map(row => [row.dataset.label, row.cells[1].innerText,
            Array.from(row.querySelectorAll('td[data-metric]')).map(
                cell => [cell.dataset.condition, cell.dataset.metric, cell.innerText])])""",
    )
    page.close()
    conditions = report["conditions"]
    first = next(iter(conditions.values()))
    assert [row[0] for row in rows] == [r["label"] for r in first["labels"]]
    compared = 0
    for i, (label, positives, cells) in enumerate(rows):
        assert int(positives) == first["labels"][i]["positives"], label
        assert len(cells) == 2 * len(conditions)
        for condition, metric, text in cells:
            expected = conditions[condition]["labels"][i][metric]
            shown = [float(x) for x in NUMBERS.findall(text)]
            assert shown == pytest.approx(_shown(expected), abs=5e-4), (label, condition, text)
            assert ("undefined" in text) == (expected["value"] is None)
            compared += len(shown)
    assert compared >= 3 * len(conditions)  # at least one defined label with an interval
