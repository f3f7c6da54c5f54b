"""The ``report_inputs`` fixture, for test modules that declare
``pytest_plugins = ("tests.support.report_fixtures",)`` (a plugin module of its own, so that
pytest loads it before anything imports it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.report_inputs import ReportInputs, build_report_inputs

_built: dict[Path, ReportInputs] = {}


@pytest.fixture
def report_inputs(
    embedded_kb: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> ReportInputs:
    """The inputs and their site, built on first use in this process and reused after (tests
    only read them; a function-scoped fixture, because the ked runs print through capsys)."""
    if embedded_kb not in _built:
        folder = tmp_path_factory.mktemp("report")
        _built[embedded_kb] = build_report_inputs(embedded_kb, folder, capsys)
    return _built[embedded_kb]
