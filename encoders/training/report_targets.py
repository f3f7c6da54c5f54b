"""Pretraining against report vectors: what ``--targets reports|both`` adds to label vectors.

A dataset whose reader knows each record's report (MIMIC-IV-ECG's machine statements) gives
every training record a report text; the distinct texts are embedded once through the cache
(`encoders.text.reports`), each training item carries the row of its report, and the loss adds
the report term (`encoders.training.losses.report_loss`). Report vectors are standardised like
the label vectors (centred and whitened when the model is built so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from encoders.ecg import Manifest
from encoders.ecg.sources import open_source
from encoders.models.ked_model import KedModel
from encoders.text.embed import Embedder
from encoders.text.reports import embed_reports
from encoders.text.spec import EncoderSpec
from encoders.training import recipe
from encoders.training.loop import ECGData, LoopSettings
from encoders.training.losses import AlignmentLoss
from kb_store.connection import read_or_write
from kb_store.store import KnowledgeBase
from ked.errors import UserError

Targets = Literal["labels", "reports", "both"]


class NoReportsError(UserError, ValueError):
    """Report targets asked for on data whose records have no reports."""


@runtime_checkable
class ReportingSource(Protocol):
    """A dataset source that knows each record's report text without reading signals."""

    def reports(self) -> dict[str, str]: ...


@dataclass
class ReportTargets:
    """The distinct report vectors and, per training record, the row of its report."""

    vectors: np.ndarray  # (distinct reports, dim)
    train_ids: np.ndarray  # (training records,) int64, -1: no report
    total: int
    distinct: int


def manifest_reports(manifest: Manifest) -> list[str | None]:
    """Each manifest record's report text, or None where its source has none."""
    by_spec: dict[str, dict[str, str]] = {}
    for spec in dict.fromkeys(str(spec) for spec in manifest.table["spec"]):
        source = open_source(spec)
        by_spec[spec] = source.reports() if isinstance(source, ReportingSource) else {}
    return [
        by_spec[str(spec)].get(str(record_id))
        for spec, record_id in zip(manifest.table["spec"], manifest.table["record_id"], strict=True)
    ]


def report_targets(embedder: Embedder, manifest: Manifest) -> ReportTargets:
    """Report vectors of the training split's records, each distinct text embedded once."""
    reports = manifest_reports(manifest.split("train"))
    if not any(reports):
        specs = ", ".join(dict.fromkeys(str(spec) for spec in manifest.table["spec"]))
        raise NoReportsError(
            f"no training record of {specs} has a report; report targets need a dataset with "
            "machine reports (mimic-iv-ecg), or use --targets labels"
        )
    embedded = embed_reports(embedder, reports)
    return ReportTargets(embedded.vectors, embedded.ids, embedded.total, embedded.distinct)


class WithReports(Dataset[tuple[torch.Tensor, ...]]):
    """Training items with the row of each record's report vector appended."""

    def __init__(self, data: ECGData, report_ids: Sequence[int] | np.ndarray) -> None:
        if len(report_ids) != len(data):  # type: ignore[arg-type]
            raise ValueError(f"{len(report_ids)} report ids for {len(data)} records")  # type: ignore[arg-type]
        self.data = data
        self.report_ids = torch.as_tensor(np.asarray(report_ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.report_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return (*self.data[index], self.report_ids[index])


def loss_weights_for(targets: Targets, settings: LoopSettings) -> LoopSettings:
    """Loop settings whose loss trains against labels, reports or both."""
    if targets not in recipe.TARGET_CHOICES:
        choices = ", ".join(recipe.TARGET_CHOICES)
        raise ValueError(f"targets must be one of {choices}, got {targets!r}")
    weights = settings.loss
    if targets != "labels":
        weights = replace(weights, report=weights.report or recipe.REPORT_WEIGHT)
    if targets == "reports":
        weights = replace(weights, bce=0.0, contrastive=0.0)
    return replace(settings, loss=weights)


def with_reports(
    model: KedModel, train: ECGData, reports: ReportTargets | None, settings: LoopSettings
) -> tuple[ECGData, AlignmentLoss | None]:
    """The training data carrying report rows, and the loss holding the report vectors
    (centred and whitened like the label vectors); ``train`` and the default loss when there
    are no reports."""
    if reports is None:
        return train, None
    vectors = torch.from_numpy(np.ascontiguousarray(reports.vectors, dtype=np.float32))
    with torch.no_grad():
        device = next(model.parameters()).device
        vectors = model.standardize_texts(vectors.to(device)).cpu()
    data: ECGData = WithReports(train, reports.train_ids)  # type: ignore[assignment]
    return data, AlignmentLoss(settings.loss, vectors)


def prepare_report_targets(
    db: Path, text: EncoderSpec, device: str | None, manifest: Manifest
) -> ReportTargets:
    """`report_targets` with the knowledge base's cache, opened read-only when every report
    is cached and for writing only to embed the texts it lacks."""
    return read_or_write(
        lambda read_only: KnowledgeBase(db, read_only=read_only),
        lambda kb: report_targets(Embedder(kb, text, device=device), manifest),
        what="report embedding",
    )
