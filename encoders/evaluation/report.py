"""Prediction files and JSON / Markdown reports of one or several evaluated conditions.

Prediction files keep what every reported number is computed from: ``<stem>.npz`` (arrays
``scores``, ``targets``, ``labels``, ``record_ids``; no pickled objects) and a tidy
``<stem>.csv`` (record_id, label, score, target; one row per recording and label).

A report compares *conditions* evaluated on the same recordings and labels (e.g. an ablation of
label views): macro and micro AUROC/AUPRC with intervals per condition, macro AUROC per group of
labels, threshold metrics where a validation set chose them, and a per-label table with
optional flags (e.g. from ``label_space.LabelSpace.flags``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.evaluation.metrics import THRESHOLD_METRICS, EvaluationResult

CSV_COLUMNS = ("record_id", "label", "score", "target")


@dataclass(frozen=True)
class Predictions:
    """Scores and targets of recordings (rows) for labels (columns)."""

    record_ids: list[str]
    labels: list[str]
    scores: np.ndarray
    targets: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(self.record_ids), len(self.labels))
        if self.scores.shape != shape or self.targets.shape != shape:
            raise ValueError(
                f"scores {self.scores.shape} and targets {self.targets.shape} must be "
                f"(record_ids, labels) = {shape}"
            )
        for what, names in (("record ids", self.record_ids), ("labels", self.labels)):
            if len(set(names)) != len(names):
                raise ValueError(f"prediction {what} are not unique")


def _stem(path: Path, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in suffixes else path


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def write_predictions(
    path: Path, record_ids: Sequence[str], labels: Sequence[str], scores: Any, targets: Any
) -> tuple[Path, Path]:
    """Write ``<stem>.npz`` and ``<stem>.csv``; returns both paths."""
    predictions = Predictions(
        [str(r) for r in record_ids],
        [str(x) for x in labels],
        np.asarray(scores),
        np.asarray(targets),
    )
    stem = _stem(path, (".npz", ".csv"))
    stem.parent.mkdir(parents=True, exist_ok=True)
    npz, table = _with(stem, ".npz"), _with(stem, ".csv")
    np.savez(
        npz,
        scores=predictions.scores,
        targets=predictions.targets,
        labels=np.array(predictions.labels, dtype=str),
        record_ids=np.array(predictions.record_ids, dtype=str),
    )
    with table.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for i, record in enumerate(predictions.record_ids):
            for j, label in enumerate(predictions.labels):
                score = predictions.scores[i, j].item()
                writer.writerow((record, label, repr(score), int(predictions.targets[i, j])))
    return npz, table


def read_predictions(path: Path) -> Predictions:
    """Read a prediction file: the ``.npz`` (default for a stem) or the tidy ``.csv``."""
    path = Path(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    npz = _with(_stem(path, (".npz",)), ".npz")
    with np.load(npz, allow_pickle=False) as data:
        missing = {"scores", "targets", "labels", "record_ids"} - set(data.files)
        if missing:
            raise ValueError(f"{npz}: missing arrays {', '.join(sorted(missing))}")
        return Predictions(
            [str(r) for r in data["record_ids"]],
            [str(x) for x in data["labels"]],
            data["scores"],
            data["targets"],
        )


def _read_csv(path: Path) -> Predictions:
    records: dict[str, int] = {}
    labels: dict[str, int] = {}
    cells: dict[tuple[int, int], tuple[float, int]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path}: columns must be {', '.join(CSV_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            key = (
                records.setdefault(row["record_id"], len(records)),
                labels.setdefault(row["label"], len(labels)),
            )
            if key in cells:
                raise ValueError(
                    f"{path} line {line}: a second row for {row['record_id']!r}, {row['label']!r}"
                )
            cells[key] = (float(row["score"]), int(row["target"]))
    if len(cells) != len(records) * len(labels):
        raise ValueError(
            f"{path}: {len(cells)} rows, expected one per recording and label "
            f"({len(records)} x {len(labels)})"
        )
    scores = np.empty((len(records), len(labels)))
    targets = np.empty((len(records), len(labels)), dtype=np.int64)
    for (i, j), (score, target) in cells.items():
        scores[i, j], targets[i, j] = score, target
    return Predictions(list(records), list(labels), scores, targets)


def _check_same_data(conditions: Mapping[str, EvaluationResult]) -> EvaluationResult:
    if not conditions:
        raise ValueError("a report needs at least one condition")
    first_name, first = next(iter(conditions.items()))
    for name, result in conditions.items():
        same = (
            result.label_names == first.label_names
            and result.n_recordings == first.n_recordings
            and [r.positives for r in result.labels] == [r.positives for r in first.labels]
        )
        if not same:
            raise ValueError(
                f"condition {name!r} was not evaluated on the same recordings and labels as "
                f"{first_name!r}: a report compares conditions on the same data"
            )
    return first


def _check_known(what: str, labels: Sequence[str], known: Sequence[str]) -> None:
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise KeyError(f"{what} name labels that are not evaluated: {', '.join(unknown)}")


def report_dict(
    conditions: Mapping[str, EvaluationResult],
    *,
    title: str = "Evaluation",
    flags: Mapping[str, str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The report as plain data (the JSON report; the Markdown report is rendered from it)."""
    first = _check_same_data(conditions)
    flags, groups = dict(flags or {}), {k: list(v) for k, v in (groups or {}).items()}
    _check_known("flags", list(flags), first.label_names)
    for group, members in groups.items():
        _check_known(f"group {group!r}", members, first.label_names)
    return {
        "title": title,
        "n_recordings": first.n_recordings,
        "n_labels": len(first.labels),
        "bootstrap": first.bootstrap.to_dict(),
        "conditions": {name: result.to_dict() for name, result in conditions.items()},
        "groups": {
            group: {
                "labels": members,
                "macro_auroc": {
                    name: result.macro_over(members).to_dict()
                    for name, result in conditions.items()
                },
            }
            for group, members in groups.items()
        },
        "flags": flags,
    }


def _fmt(value: Mapping[str, Any]) -> str:
    """An estimate's JSON form as ``0.912 [0.889, 0.933]``."""
    if value["value"] is None:
        return "undefined"
    if value["low"] is None:
        return f"{value['value']:.3f}"
    return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


def report_markdown(report: Mapping[str, Any]) -> str:
    """Render a ``report_dict`` as Markdown."""
    conditions: dict[str, Any] = report["conditions"]
    names = list(conditions)
    first = next(iter(conditions.values()))
    boot = report["bootstrap"]
    lines = [
        f"# {report['title']}",
        "",
        f"{report['n_recordings']} recordings, {report['n_labels']} labels. Intervals: "
        f"{boot['confidence']:.0%} percentile bootstrap over recordings, {boot['resamples']} "
        f"resamples, seed {boot['seed']}. Macro means average the labels defined on this set; "
        "micro means pool all (recording, label) cells.",
        "",
        "## Summary",
        "",
        *_table(
            ["condition", "macro AUROC", "micro AUROC", "macro AUPRC", "micro AUPRC", "averaged"],
            [
                [
                    name,
                    _fmt(c["macro"]["auroc"]),
                    _fmt(c["micro"]["auroc"]),
                    _fmt(c["macro"]["auprc"]),
                    _fmt(c["micro"]["auprc"]),
                    f"{c['macro']['auroc']['labels']} of {report['n_labels']}",
                ]
                for name, c in conditions.items()
            ],
        ),
    ]
    if report["groups"]:
        lines += ["", "## Groups (macro AUROC)", ""]
        lines += _table(
            ["group", "averaged", *names],
            [
                [
                    group,
                    f"{g['macro_auroc'][names[0]]['labels']} of {len(g['labels'])}",
                    *(_fmt(g["macro_auroc"][n]) for n in names),
                ]
                for group, g in report["groups"].items()
            ],
        )
    lines += ["", "## Thresholds", ""]
    with_thresholds = {n: c["thresholds"] for n, c in conditions.items() if c["thresholds"]}
    for name, c in conditions.items():
        if not c["thresholds"]:
            lines += [f"- {name}: not reported ({c['thresholds_note']}).", ""]
    if with_thresholds:
        rule = next(iter(with_thresholds.values()))["rule"]
        lines += [f"Threshold rule: {rule}. Macro means on this set:", ""]
        lines += _table(
            ["condition", *THRESHOLD_METRICS, "averaged (F1)"],
            [
                [
                    name,
                    *(_fmt(t["macro"][m]) for m in THRESHOLD_METRICS),
                    f"{t['macro']['f1']['labels']} of {report['n_labels']}",
                ]
                for name, t in with_thresholds.items()
            ],
        )
    lines += ["", "## Per label (AUROC)", ""]
    rows = []
    for i, row in enumerate(first["labels"]):
        label = row["label"]
        cells = [_fmt(conditions[n]["labels"][i]["auroc"]) for n in names]
        note = f"undefined: {row['undefined']}" if row["undefined"] else ""
        rows.append([label, str(row["positives"]), *cells, note, report["flags"].get(label, "")])
    lines += _table(["label", "positives", *names, "note", "flag"], rows)
    if first["undefined"]:
        lines += ["", "## Undefined labels (excluded from macro means)", ""]
        lines += [f"- {label}: {reason}" for label, reason in first["undefined"].items()]
    return "\n".join(lines) + "\n"


def write_report(
    path: Path,
    conditions: Mapping[str, EvaluationResult],
    *,
    title: str = "Evaluation",
    flags: Mapping[str, str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md``; returns both paths."""
    report = report_dict(conditions, title=title, flags=flags, groups=groups)
    stem = _stem(path, (".json", ".md"))
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = _with(stem, ".json"), _with(stem, ".md")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    md_path.write_text(report_markdown(report), "utf-8")
    return json_path, md_path
