"""Zero-shot evaluation of a checkpoint, with the knowledge-vs-name ablation in one report.

The evaluated split is ``test`` when the dataset has one, else ``val`` (or ``all`` records,
for a dataset used only for evaluation). Thresholds for F1, sensitivity and specificity are
chosen on another split, never the evaluated one: ``val`` when evaluating ``test``, else
``train``; with ``all`` there is none, and the report says threshold metrics are absent.
Labels are grouped by whether their diagnosis was among the checkpoint's training labels, and
flagged where the label space puts another label closer than ``similarity_threshold``. With
``measured_criteria`` the knowledge condition is also reported with what each label's knowledge
states checked against the recordings (`encoders.inference.criteria`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.datasets import (
    evaluation_preprocessing,
    open_manifest,
    record_label_strings,
    target_labels,
)
from encoders.ecg import ECGDataset, Manifest
from encoders.evaluation import (
    BootstrapSettings,
    EvaluationResult,
    Predictions,
    evaluate,
    plot_auroc_bars,
    plot_roc_curves,
    write_predictions,
    write_report,
)
from encoders.inference.zeroshot import LabelVectors, LLMProvider, ZeroShotClassifier
from encoders.models.checkpoint import load_checkpoint
from kb_store.connection import read_or_write
from kb_store.store import KnowledgeBase
from ked.config import DEFAULT_USABLE_STATUSES

log = logging.getLogger(__name__)
Vectors = dict[str, LabelVectors]


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: Path
    data: str
    out: Path
    db: Path
    vocab: str | None = None
    labels: tuple[str, ...] = ()
    views: tuple[str, ...] | None = None  # default: the checkpoint's views
    ablation: bool = True
    measured_criteria: bool = True
    eval_split: str | None = None
    threshold_split: str | None = None
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    similarity_threshold: float = 0.95
    llm: LLMProvider | None = None
    device: str | None = None
    knowledge_statuses: tuple[str, ...] = DEFAULT_USABLE_STATUSES  # see ked.config


@dataclass
class EvalOutcome:
    conditions: dict[str, EvaluationResult]
    groups: dict[str, list[str]]
    flags: dict[str, str]
    eval_split: str
    threshold_split: str | None
    files: list[Path]

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """(condition, group, macro AUROC with interval) for printing."""
        rows = []
        for name, result in self.conditions.items():
            rows.append((name, "all labels", _fmt(result.macro_over(result.label_names))))
            for group, members in self.groups.items():
                rows.append((name, group, _fmt(result.macro_over(members))))
        return rows


def _fmt(mean: Any) -> str:
    data = mean.to_dict()
    if data["value"] is None:
        return "undefined"
    interval = "" if data["low"] is None else f" [{data['low']:.3f}, {data['high']:.3f}]"
    return f"{data['value']:.3f}{interval} ({data['labels']} labels)"


def evaluate_checkpoint(config: EvalConfig) -> EvalOutcome:
    """Score the evaluated split per condition; write predictions, report and plots."""
    checkpoint = load_checkpoint(config.checkpoint)
    views = list(config.views or checkpoint.views)
    conditions_views = {f"knowledge ({'+'.join(views)})": views}
    if config.ablation and views != ["name"]:
        conditions_views["name"] = ["name"]
    manifest = open_manifest(config.data)
    splits = set(manifest.table["split"])
    eval_split = config.eval_split or ("test" if "test" in splits else "val")
    threshold_split = _threshold_split(config.threshold_split, eval_split, splits)
    labels_in_data = record_label_strings(manifest)

    def label_side(kb: KnowledgeBase) -> tuple[ZeroShotClassifier, Vectors, dict[str, str]]:
        classifier = ZeroShotClassifier(checkpoint, kb, llm=config.llm, device=config.device)
        vectors = {
            name: classifier.label_vectors(labels=config.labels, vocab=config.vocab, views=v)
            for name, v in conditions_views.items()
        }
        mapping = target_labels(kb, next(iter(vectors.values())).entries, labels_in_data)
        return classifier, vectors, mapping

    classifier, vectors, mapping = read_or_write(
        lambda read_only: KnowledgeBase(
            config.db, usable=config.knowledge_statuses, read_only=read_only
        ),
        label_side,
        what="evaluation",
    )
    first = next(iter(vectors.values()))
    names = [e.label for e in first.entries]
    trained = {e.diagnosis_id for e in checkpoint.entries}
    groups = {
        "seen in pretraining": [e.label for e in first.entries if e.diagnosis_id in trained],
        "unseen in pretraining": [e.label for e in first.entries if e.diagnosis_id not in trained],
    }
    groups = {k: v for k, v in groups.items() if v}
    scored = {eval_split: evaluation_dataset(manifest, eval_split, names, mapping, checkpoint)}
    if threshold_split is not None:
        scored[threshold_split] = evaluation_dataset(
            manifest, threshold_split, names, mapping, checkpoint
        )
    config.out.mkdir(parents=True, exist_ok=True)
    conditions: list[tuple[str, dict[str, np.ndarray]]] = []
    for condition, label_vectors in vectors.items():
        scores = {split: classifier.scores(d, label_vectors) for split, d in scored.items()}
        conditions.append((condition, scores))
        if config.measured_criteria and label_vectors is first and views != ["name"]:
            measured = {
                s: v + classifier.criteria_prior(scored[s], label_vectors)
                for s, v in scores.items()
            }
            conditions.append((f"{condition} + measured criteria", measured))
    results, predictions, files = {}, {}, []
    for condition, scores in conditions:
        data = scored[eval_split]
        validation = (
            (scores[threshold_split], scored[threshold_split].targets)
            if threshold_split is not None
            else None
        )
        results[condition] = evaluate(
            scores[eval_split],
            data.targets,
            names,
            validation=validation,
            bootstrap=config.bootstrap,
        )
        predictions[condition] = Predictions(
            list(data.record_ids), names, scores[eval_split], data.targets
        )
        stem = config.out / f"predictions-{_slug(condition)}"
        write_predictions(stem, data.record_ids, names, scores[eval_split], data.targets)
        files += [stem.with_suffix(".npz"), stem.with_suffix(".csv")]
    flags = _flags(classifier, first, config.similarity_threshold)
    title = f"Zero-shot evaluation of {checkpoint.path} on {config.data} ({eval_split})"
    files += list(
        write_report(config.out / "report", results, title=title, flags=flags, groups=groups)
    )
    files.append(plot_roc_curves(config.out / "roc.png", predictions))
    files.append(plot_auroc_bars(config.out / "auroc.png", results))
    return EvalOutcome(results, groups, flags, eval_split, threshold_split, files)


def _threshold_split(requested: str | None, eval_split: str, splits: set[str]) -> str | None:
    """Where thresholds are chosen: never the evaluated records."""
    if eval_split == "all":
        if requested is not None:
            raise ValueError("with the whole dataset evaluated, no split is left for thresholds")
        return None
    chosen = requested or ("val" if eval_split == "test" else "train")
    if chosen == eval_split:
        raise ValueError("thresholds cannot be chosen on the evaluated split")
    if chosen not in splits:
        log.warning("no %s split: threshold metrics are not reported", chosen)
        return None
    return chosen


def evaluation_dataset(
    manifest: Manifest,
    split: str,
    names: Sequence[str],
    mapping: dict[str, str],
    checkpoint: Any,
) -> ECGDataset:
    """The records of ``split`` (``"all"``: every record) as the checkpoint scores them."""
    part = manifest if split == "all" else manifest.split(split)
    if len(part) == 0:
        raise ValueError(f"the {split} split of the data is empty")
    preprocessing = evaluation_preprocessing(checkpoint.preprocessing)
    return ECGDataset(part, preprocessing, names, mapping.get, cache="memory")


def _flags(
    classifier: ZeroShotClassifier, vectors: LabelVectors, threshold: float
) -> dict[str, str]:
    """Labels with a neighbour closer than ``threshold`` in the space the model scores in."""
    if len(vectors.entries) < 2:
        return {}
    return classifier.scoring_space(vectors).flags(threshold)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")
