"""Few-shot adaptation of a pretrained checkpoint: linear probe or full fine-tune.

The label head starts from the label vectors of the checkpoint's own text encoder, so zero
training steps give exactly the zero-shot model. A seeded fraction of the training split is
used, chosen so that every label has at least one positive where the budget allows.
Selection is on a validation set only: the dataset's ``val`` split when it also has a ``test``
split (evaluation then uses ``test``); otherwise a seeded 15% of ``train`` is set aside for
selection and evaluation uses ``val``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from encoders.datasets import (
    datasets,
    evaluation_preprocessing,
    open_manifest,
    record_label_strings,
    target_labels,
)
from encoders.ecg import ECGDataset
from encoders.inference.predict import macro_auroc, predict
from encoders.inference.zeroshot import LabelVectors, ZeroShotClassifier
from encoders.models.checkpoint import load_checkpoint
from encoders.training.loop import LabelBank, LoopSettings, Run, StepInfo, fit
from kb_store.connection import read_or_write
from kb_store.store import KnowledgeBase
from ked.config import DEFAULT_USABLE_STATUSES

log = logging.getLogger(__name__)

Mode = Literal["linear", "full"]


@dataclass(frozen=True)
class FinetuneConfig:
    checkpoint: Path
    data: str
    out: Path
    db: Path
    vocab: str | None = None
    labels: tuple[str, ...] = ()
    views: tuple[str, ...] | None = None  # default: the checkpoint's views
    mode: Mode = "linear"
    fraction: float = 1.0
    loop: LoopSettings = field(default_factory=lambda: LoopSettings(epochs=20, lr=1e-3))
    split_seed: int = 0
    device: str | None = None
    knowledge_statuses: tuple[str, ...] = DEFAULT_USABLE_STATUSES  # see ked.config

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class FinetuneResult:
    out: Path
    train_records: int
    best_epoch: int
    best_val_auroc: float
    eval_split: str
    eval_auroc: float
    zero_shot_eval_auroc: float
    history: list[dict[str, Any]]


def few_shot_indices(targets: np.ndarray, fraction: float, seed: int) -> list[int]:
    """A seeded ``fraction`` of the rows, covering the rarest labels first with one positive."""
    rng = np.random.default_rng(seed)
    budget = max(1, round(fraction * len(targets)))
    chosen: list[int] = []
    covered = np.zeros(targets.shape[1], dtype=bool)
    for label in np.argsort(targets.sum(0), kind="stable"):
        if len(chosen) >= budget:
            break
        positives = np.flatnonzero(targets[:, label])
        if covered[label] or len(positives) == 0:
            continue
        pick = int(rng.choice(positives))
        chosen.append(pick)
        covered |= targets[pick] > 0
    rest = np.setdiff1d(np.arange(len(targets)), chosen)
    fill = rng.permutation(rest)[: max(0, budget - len(chosen))]
    return sorted(chosen + [int(i) for i in fill])


def finetune(
    config: FinetuneConfig, on_step: Callable[[StepInfo], None] | None = None
) -> FinetuneResult:
    """Adapt the checkpoint on a fraction of the training labels; evaluate the best epoch."""
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.loop.seed)
    checkpoint = load_checkpoint(config.checkpoint)
    views = list(config.views or checkpoint.views)
    manifest = open_manifest(config.data, split_seed=config.split_seed)
    labels_in_data = record_label_strings(manifest)

    def label_side(kb: KnowledgeBase) -> tuple[LabelVectors, dict[str, str]]:
        zero_shot = ZeroShotClassifier(checkpoint, kb, device=str(device))
        vectors = zero_shot.label_vectors(
            labels=config.labels, vocab=config.vocab, views=views
        ).resolved()
        return vectors, target_labels(kb, vectors.entries, labels_in_data)

    vectors, mapping = read_or_write(
        lambda read_only: KnowledgeBase(
            config.db, usable=config.knowledge_statuses, read_only=read_only
        ),
        label_side,
        what="fine-tuning",
    )
    entries = vectors.entries
    label_vectors = vectors.combined()
    labels = [e.label for e in entries]
    has_test = bool((manifest.table["split"] == "test").any())
    splits = ("train", "val", "test") if has_test else ("train", "val")
    data = datasets(manifest, labels, mapping, checkpoint.preprocessing, splits=splits)
    train_pool, selection, evaluation = _roles(data, has_test, config.split_seed)
    train_targets = data["train"].targets[train_pool]
    picked = [
        train_pool[i] for i in few_shot_indices(train_targets, config.fraction, config.loop.seed)
    ]
    model = checkpoint.model.train()
    for parameter in model.parameters():
        parameter.requires_grad = config.mode == "full"
    for tower in model.towers():  # a linear probe trains the label heads only
        for head in (tower.head, tower.decoder):
            for parameter in head.parameters() if head is not None else ():
                parameter.requires_grad = True
    bank = LabelBank(label_vectors, trainable=True)
    eval_set = data[evaluation]
    zero_scores, eval_targets = predict(model, eval_set, bank().detach(), 64, device)
    run = Run(
        out=config.out,
        entries=entries,
        preprocessing=checkpoint.preprocessing,
        extra={
            "kind": f"finetune-{config.mode}",
            "views": views,
            "text_encoder": checkpoint.text_encoder,
            "held_out": checkpoint.config.get("held_out", []),
            "parent": str(checkpoint.path),
            "training": {**config.to_dict(), "train_records": len(picked)},
        },
    )
    result = fit(
        model,
        bank,
        Subset(data["train"], picked),
        selection,
        config.loop,
        run,
        device=device,
        on_step=on_step,
    )
    best = load_checkpoint(config.out)
    scores, _ = predict(best.model, eval_set, best.label_vectors, 64, device)
    return FinetuneResult(
        out=config.out,
        train_records=len(picked),
        best_epoch=result.best_epoch,
        best_val_auroc=result.best_val_auroc,
        eval_split=evaluation,
        eval_auroc=macro_auroc(scores, eval_targets)[0],
        zero_shot_eval_auroc=macro_auroc(zero_scores, eval_targets)[0],
        history=result.history,
    )


def _roles(
    data: dict[str, ECGDataset], has_test: bool, seed: int
) -> tuple[list[int], Dataset[Any], str]:
    """(training pool indices, selection dataset, evaluation split name)."""
    train = data["train"]
    if has_test:
        return list(range(len(train))), data["val"], "test"
    order = np.random.default_rng(seed).permutation(len(train))
    held = max(1, round(0.15 * len(train)))
    scoring = copy.copy(train)
    scoring.preprocessing = evaluation_preprocessing(train.preprocessing)
    selection = Subset(scoring, sorted(int(i) for i in order[:held]))
    return sorted(int(i) for i in order[held:]), selection, "val"
