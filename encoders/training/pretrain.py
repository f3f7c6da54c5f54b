"""Pretraining: align an ECG encoder with cached label vectors.

AdamW with a warm-up then cosine schedule, gradient clipping, mixed precision on GPU,
seeded; the validation macro AUROC after every epoch selects the best checkpoint (validation
only). Runs under ``torchrun`` as DDP (distributed sampler, rank-0 checkpoints and logs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from encoders.ecg import Preprocessing
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text import Embedder, EncoderSpec, LabelEntry, label_entries, label_matrix
from encoders.training.checkpoint import save_checkpoint
from encoders.training.data import datasets, open_manifest, record_label_strings, target_labels
from encoders.training.losses import AlignmentLoss, LossWeights
from encoders.training.validation import macro_auroc, predict
from kb_store.store import KnowledgeBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    data: str
    out: Path
    db: Path
    vocab: str | None = None
    labels: tuple[str, ...] = ()
    holdout: tuple[str, ...] = ()
    views: tuple[str, ...] = ("full",)
    text: EncoderSpec = field(default_factory=EncoderSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing(crop="random"))
    loss: LossWeights = field(default_factory=LossWeights)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    split_seed: int = 0
    workers: int = 0
    device: str | None = None
    amp: bool = True
    resume: bool = False
    max_steps_per_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        return json.loads(json.dumps(data, default=str))


@dataclass
class StepInfo:
    epoch: int
    step: int
    steps: int
    loss: float
    records_per_s: float


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
    vectors: np.ndarray
    mapping: dict[str, str]
    held_out: list[str]
    text_encoder: dict[str, Any]


def pretrain(
    config: PretrainConfig, on_step: Callable[[StepInfo], None] | None = None
) -> PretrainResult:
    """Train, validate each epoch, keep the best checkpoint; resumable from ``last.pt``."""
    rank, world = _init_distributed()
    device = _device(config.device, rank)
    torch.manual_seed(config.seed + rank)
    np.random.seed(config.seed + rank)
    manifest = _on_rank0_first(
        rank, lambda: open_manifest(config.data, split_seed=config.split_seed)
    )
    setup = _broadcast(rank, lambda: _prepare(config, record_label_strings(manifest)))
    labels = [e.label for e in setup.entries]
    data = datasets(manifest, labels, setup.mapping, config.preprocessing)
    model = KedModel(replace(config.model, text_dim=int(setup.vectors.shape[1]))).to(device)
    label_vectors = torch.from_numpy(setup.vectors).to(device)
    sampler = (
        DistributedSampler(data["train"], world, rank, seed=config.seed) if world > 1 else None
    )
    loader = DataLoader(
        data["train"],
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.workers,
        drop_last=len(data["train"]) > config.batch_size * world,
        generator=torch.Generator().manual_seed(config.seed),
    )
    steps_per_epoch = (
        len(loader)
        if config.max_steps_per_epoch is None
        else min(len(loader), config.max_steps_per_epoch)
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = _warmup_cosine(optimizer, steps_per_epoch * config.epochs,
                               round(steps_per_epoch * config.warmup_epochs))  # fmt: skip
    loss_fn = AlignmentLoss(config.loss)
    autocast, scaler = _mixed_precision(device, config.amp)
    state = _resume(config, model, optimizer, scheduler) if config.resume else {}
    start_epoch = state.get("epoch", 0)
    best = {"epoch": state.get("best_epoch", -1), "auroc": state.get("best_auroc", -math.inf)}
    history: list[dict[str, Any]] = state.get("history", [])
    trained = DistributedDataParallel(model) if world > 1 else model
    extra = {
        "views": list(config.views),
        "text_encoder": setup.text_encoder,
        "held_out": setup.held_out,
        "training": config.to_dict(),
    }
    for epoch in range(start_epoch, config.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        trained.train()
        started, seen, losses = time.perf_counter(), 0, []
        for step, (x, _mask, targets) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            x, targets = x.to(device), targets.to(device)
            with autocast():
                out = trained(x, label_vectors)
                terms = loss_fn(out.logits, out.ecg_embeddings, out.label_embeddings, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += len(x) * world
            losses.append(float(terms["loss"].detach()))
            if on_step and rank == 0:
                rate = seen / (time.perf_counter() - started)
                on_step(StepInfo(epoch, step + 1, steps_per_epoch, losses[-1], rate))
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "lr": scheduler.get_last_lr()[0],
            "train_records_per_s": seen / (time.perf_counter() - started),
        }
        if rank == 0:
            scores, targets = predict(model, data["val"], label_vectors, config.batch_size, device)
            record["val_macro_auroc"], record["val_labels_defined"] = macro_auroc(scores, targets)
            history.append(record)
            _append_jsonl(config.out / "metrics.jsonl", record)
            log.info("epoch %d: %s", epoch + 1, record)
            if record["val_macro_auroc"] > best["auroc"]:
                best = {"epoch": epoch + 1, "auroc": record["val_macro_auroc"]}
                save_checkpoint(config.out / "best.safetensors", model, label_vectors.cpu(),
                                setup.entries, config.preprocessing,
                                {**extra, "epoch": epoch + 1, "val": record})  # fmt: skip
            _save_state(
                config.out / "last.pt", model, optimizer, scheduler, epoch + 1, best, history
            )
        if world > 1:
            dist.barrier()
    if world > 1:
        dist.destroy_process_group()
    return PretrainResult(config.out, best["epoch"], best["auroc"], labels, setup.held_out, history)


def _prepare(config: PretrainConfig, record_labels: set[str]) -> _Setup:
    """Label set, label vectors (embedding what is missing) and the record-label mapping."""
    with KnowledgeBase(config.db) as kb:
        entries = label_entries(kb, vocab=config.vocab, labels=config.labels)
        unresolved = [e.label for e in entries if e.diagnosis_id is None]
        if unresolved:
            log.warning("labels without a diagnosis are left out: %s", ", ".join(unresolved))
        held = {d.id for d in kb.resolve_many(config.holdout).values() if d is not None}
        missing_holdout = [h for h, d in kb.resolve_many(config.holdout).items() if d is None]
        if missing_holdout:
            raise ValueError(f"held-out labels not found: {', '.join(missing_holdout)}")
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
        log.info("%d training labels (%d without examples in the data left out, %d held out)",
                 len(train_entries), dropped, len(held))  # fmt: skip
        embedder = Embedder(kb, config.text, device=config.device)
        matrix = label_matrix(embedder, train_entries, list(config.views))
        held_out = [e.label for e in entries if e.diagnosis_id in held]
        text = {**embedder.description, "fingerprint": embedder.fingerprint}
        return _Setup(train_entries, matrix.vectors, mapping, held_out, text)


def _warmup_cosine(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _mixed_precision(device: torch.device, enabled: bool) -> tuple[Any, torch.amp.GradScaler]:
    if not enabled or device.type != "cuda":
        return nullcontext, torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _save_state(
    path: Path,
    model: KedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    epoch: int,
    best: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_epoch": best["epoch"],
        "best_auroc": best["auroc"],
        "history": history,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(
    config: PretrainConfig,
    model: KedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> dict[str, Any]:
    path = config.out / "last.pt"
    if not path.is_file():
        log.warning("nothing to resume in %s; starting from scratch", config.out)
        return {}
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming %s after epoch %d", config.out, state["epoch"])
    return dict(state)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _init_distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(requested: str | None, rank: int) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


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
