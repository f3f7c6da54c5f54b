"""Pretraining: align an ECG encoder with cached label vectors.

Rank 0 resolves the label set in the knowledge base, opened read-only when every label vector
is cached (for writing only to embed what is missing), takes the label vectors and broadcasts
them; the other ranks never open the knowledge base or load the text model. The loop in
:mod:`encoders.training.loop` does the rest. Runs under ``torchrun`` as DDP: each rank on its
own ``LOCAL_RANK`` GPU, a distributed sampler, rank-0 checkpoints and logs. The records come
from their sources (prepared into memory) or from an on-disk signal store (``store``, memory-
mapped and shared by every rank and loader worker through the page cache).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from encoders.datasets import (
    datasets,
    held_out_diagnoses,
    open_manifests,
    record_label_strings,
    store_manifest,
    target_labels,
)
from encoders.ecg import Preprocessing
from encoders.ecg.signal_store import SignalStore
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text import Embedder, EncoderSpec, LabelEntry, label_entries, label_matrix
from encoders.text.device import process_device
from encoders.training import recipe
from encoders.training.augment import Augmentation
from encoders.training.loop import LabelBank, LoopSettings, Run, StepInfo, fit
from encoders.training.report_targets import (
    Targets,
    loss_weights_for,
    prepare_report_targets,
    with_reports,
)
from kb_store.connection import read_or_write
from kb_store.store import KnowledgeBase
from ked.config import DEFAULT_USABLE_STATUSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """A pretraining run. ``data`` is one dataset spec or several (trained on together, each
    label masked where a dataset never reports it); with several ``views`` every step draws one
    view's vector per label. With ``store`` (a folder from `build_signal_store`) the records
    come from that store instead, and ``data`` is empty."""

    data: str | tuple[str, ...]
    out: Path
    db: Path
    vocab: str | None = None
    labels: tuple[str, ...] = ()
    holdout: tuple[str, ...] = ()
    views: tuple[str, ...] = recipe.VIEWS
    text: EncoderSpec = field(default_factory=EncoderSpec)
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            encoder=recipe.ENCODER,
            center_labels=recipe.CENTER_LABELS,
            whiten_labels=recipe.WHITEN_LABELS,
            pooling=recipe.POOLING,  # type: ignore[arg-type]
            members=recipe.MEMBERS,
        )
    )
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing(crop="random"))
    loop: LoopSettings = field(
        default_factory=lambda: LoopSettings(augment=Augmentation() if recipe.AUGMENT else None)
    )
    split_seed: int = 0
    device: str | None = None
    resume: bool = False
    targets: Targets = recipe.TARGETS  # type: ignore[assignment]  # labels, reports or both
    store: Path | None = None
    knowledge_statuses: tuple[str, ...] = DEFAULT_USABLE_STATUSES  # see ked.config

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        return json.loads(json.dumps(data, default=str))


@dataclass
class PretrainResult:
    out: Path
    best_epoch: int
    best_val_auroc: float
    train_labels: list[str]
    held_out: list[str]
    history: list[dict[str, Any]]


@dataclass
class _Setup:
    """What rank 0 prepares from the knowledge base and shares with the other ranks."""

    entries: list[LabelEntry]
    vectors: np.ndarray  # (labels, dim), or (labels, views, dim) for several views
    mapping: dict[str, str]
    held_out: list[str]
    text_encoder: dict[str, Any]


def pretrain(
    config: PretrainConfig, on_step: Callable[[StepInfo], None] | None = None
) -> PretrainResult:
    """Train, validate each epoch, keep the best checkpoint; resumable from ``last.pt``."""
    device = torch.device(process_device(config.device))
    rank, world = _init_distributed(device)
    torch.manual_seed(config.loop.seed + rank)
    np.random.seed(config.loop.seed + rank)
    store = None
    if config.store is not None:
        store = SignalStore(config.store)
        store.require(config.preprocessing)
        manifest = store_manifest(store, split_seed=config.split_seed)
    else:
        specs = (config.data,) if isinstance(config.data, str) else config.data
        manifest = _on_rank0_first(
            rank, lambda: open_manifests(specs, split_seed=config.split_seed)
        )
    reports = (
        _broadcast(
            rank, lambda: prepare_report_targets(config.db, config.text, config.device, manifest)
        )
        if config.targets != "labels"
        else None
    )
    setup = _broadcast(rank, lambda: _prepare(config, record_label_strings(manifest)))
    labels = [e.label for e in setup.entries]
    data = datasets(manifest, labels, setup.mapping, config.preprocessing, store=store)
    vectors = torch.from_numpy(setup.vectors)
    model = KedModel(replace(config.model, text_dim=int(vectors.shape[-1])))
    if config.model.center_labels:
        model.fit_label_space(vectors.reshape(-1, vectors.shape[-1]))
    run = Run(
        out=config.out,
        entries=setup.entries,
        preprocessing=config.preprocessing,
        extra={
            "kind": "pretrain",
            "views": list(config.views),
            "text_encoder": setup.text_encoder,
            "held_out": setup.held_out,
            "training": config.to_dict(),
        },
        resume=config.resume,
    )
    bank = LabelBank(vectors)
    loop = loss_weights_for(config.targets, config.loop)
    train, loss = with_reports(model, data["train"], reports, loop)
    try:
        result = fit(
            model,
            bank,
            train,
            data["val"],
            loop,
            run,
            device=device,
            on_step=on_step,
            loss_fn=loss,
        )
    finally:
        if world > 1:
            dist.destroy_process_group()
    return PretrainResult(
        config.out,
        result.best_epoch,
        result.best_val_auroc,
        labels,
        setup.held_out,
        result.history,
    )


def _prepare(config: PretrainConfig, record_labels: set[str]) -> _Setup:
    """Label set, label vectors and the record-label mapping, from the knowledge base opened
    read-only, or for writing when label texts must be embedded."""
    return read_or_write(
        lambda read_only: KnowledgeBase(
            config.db, usable=config.knowledge_statuses, read_only=read_only
        ),
        lambda kb: _setup(kb, config, record_labels),
        what="pretraining",
    )


def _setup(kb: KnowledgeBase, config: PretrainConfig, record_labels: set[str]) -> _Setup:
    entries = label_entries(kb, vocab=config.vocab, labels=config.labels)
    unresolved = [e.label for e in entries if e.diagnosis_id is None]
    if unresolved:
        log.warning("labels without a diagnosis are left out: %s", ", ".join(unresolved))
    held = held_out_diagnoses(kb, config.holdout)
    unique: dict[int, LabelEntry] = {}
    for entry in entries:
        if entry.diagnosis_id is not None and entry.diagnosis_id not in held:
            unique.setdefault(entry.diagnosis_id, entry)
    candidates = list(unique.values())
    mapping = target_labels(kb, candidates, record_labels)
    present = set(mapping.values())
    train_entries = [e for e in candidates if e.label in present]
    if not train_entries:
        raise ValueError("no label of the label set occurs in the data")
    dropped = len(candidates) - len(train_entries)
    log.info(
        "%d training labels (%d without examples in the data left out, %d held out)",
        len(train_entries),
        dropped,
        len(held),
    )
    embedder = Embedder(kb, config.text, device=config.device)
    per_view = [label_matrix(embedder, train_entries, [v]).vectors for v in config.views]
    vectors = per_view[0] if len(per_view) == 1 else np.stack(per_view, axis=1)
    held_out = [e.label for e in entries if e.diagnosis_id in held]
    text = {**embedder.description, "fingerprint": embedder.fingerprint}
    return _Setup(train_entries, vectors, mapping, held_out, text)


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); under ``torchrun`` joins the process group (NCCL between GPUs,
    gloo on CPUs) with this rank's GPU as its current device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _on_rank0_first(rank: int, make: Callable[[], Any]) -> Any:
    """Rank 0 makes it first (e.g. scans and caches a manifest), then the others."""
    if rank == 0:
        value = make()
    if dist.is_initialized():
        dist.barrier()
    return value if rank == 0 else make()


def _broadcast(rank: int, make: Callable[[], Any]) -> Any:
    """Made on rank 0 only (the knowledge base has one writer), sent to every rank."""
    box = [make() if rank == 0 else None]
    if dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    return box[0]
