"""What a report shows besides the knowledge base: a ``ked eval`` folder and ``ked explain`` output.

Both are read as written, never recomputed: the evaluation page shows ``report.json``'s numbers
and the plots ``ked eval`` drew; the explanation page shows each ``explain-*.json`` with its PNG
(or the PNG alone, as ``ked demo`` writes it).
Images become ``data:`` URIs so that the site needs no other file.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ked.errors import UserError

EVALUATION_PLOTS = {"roc.png": "ROC curves", "auroc.png": "Per-label AUROC with intervals"}
_REPORT_KEYS = ("title", "n_recordings", "n_labels", "bootstrap", "conditions", "groups", "flags")
_EXPLANATION_KEYS = (
    "label",
    "probability",
    "logit",
    "method",
    "ranking",
    "lead_importance",
    "regions",
    "knowledge",
)


class ReportInputError(UserError, ValueError):
    """An evaluation or explanation folder that is missing or not what ked wrote."""


def data_uri(path: Path, mime: str = "image/png") -> str:
    """The file as a ``data:`` URI, for an ``<img src>`` that needs no other file."""
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot be read as JSON ({exc})") from None


@dataclass(frozen=True)
class EvaluationInput:
    """A ``ked eval`` output folder: its ``report.json`` and its plots as data URIs."""

    folder: Path
    report: dict[str, Any]
    plots: dict[str, str]  # caption -> data URI

    @property
    def labels(self) -> list[str]:
        """The evaluated labels, in the report's order."""
        first = next(iter(self.report["conditions"].values()))
        return [row["label"] for row in first["labels"]]


def read_evaluation(folder: Path) -> EvaluationInput:
    """Read a ``ked eval --out`` folder; errors name the folder and what is missing."""
    folder = Path(folder)
    path = folder / "report.json"
    if not path.is_file():
        raise ReportInputError(f"no report.json in {folder} (give a `ked eval --out` folder)")
    report = _read_json(path)
    missing = [k for k in _REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing or not report["conditions"]:
        what = ", ".join(missing) or "conditions"
        raise ReportInputError(f"{path} is not a ked evaluation report (no {what})")
    plots = {
        caption: data_uri(folder / name)
        for name, caption in EVALUATION_PLOTS.items()
        if (folder / name).is_file()
    }
    return EvaluationInput(folder, report, plots)


@dataclass(frozen=True)
class ExplanationInput:
    """One explanation: its JSON (``ked explain``) and its plot as a data URI, either of which
    may be absent (``ked demo`` writes the plot only)."""

    name: str  # the file stem, e.g. explain-730-complete-left-bundle-branch-block
    explanation: dict[str, Any] | None
    plot: str | None


def _explanation(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = _read_json(path)
    missing = [k for k in _EXPLANATION_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ReportInputError(f"{path} is not a ked explanation (no {', '.join(missing)})")
    return dict(data)


def read_explanations(folder: Path) -> list[ExplanationInput]:
    """Every ``explain-*.json`` and ``explain-*.png`` of a folder, paired by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportInputError(f"no folder {folder} (give a `ked explain --out` folder)")
    stems = sorted(
        {p.stem for pattern in ("explain-*.json", "explain-*.png") for p in folder.glob(pattern)}
    )
    if not stems:
        raise ReportInputError(
            f"no explain-*.json or explain-*.png in {folder} (give a `ked explain --out` folder)"
        )
    found = []
    for stem in stems:
        png = folder / f"{stem}.png"
        plot = data_uri(png) if png.is_file() else None
        found.append(ExplanationInput(stem, _explanation(folder / f"{stem}.json"), plot))
    return found
