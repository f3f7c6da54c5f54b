"""The training loop shared by pretraining and fine-tuning.

AdamW with a warm-up then cosine schedule, gradient clipping, mixed precision on GPU, DDP
when a process group is up. With ``ema_decay`` an exponential moving average of the weights
(and buffers) is kept beside them, and it is the average that is validated and saved: fewer
epoch-to-epoch swings for the validation split to pick from. After every epoch rank 0 scores
the validation set; the epoch with the best validation macro AUROC is kept as
``best.safetensors`` (selection on validation only), ``last.pt`` holds what ``resume`` needs,
and ``metrics.jsonl`` one line per epoch. A model of several towers (``ModelConfig.members``)
gives each tower its own loss and clips each tower's gradient on its own, so every tower trains
on the same batches exactly as it would alone; the epoch is chosen by their averaged logits.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from transformers import get_cosine_schedule_with_warmup

from encoders.ecg import Preprocessing
from encoders.inference.predict import macro_auroc, predict
from encoders.models.checkpoint import CheckpointError, load_training_state, save_checkpoint
from encoders.models.ked_model import KedModel, ModelOutput
from encoders.text.labels import LabelEntry
from encoders.training import recipe
from encoders.training.augment import Augmentation
from encoders.training.losses import AlignmentLoss, LossWeights
from ked.errors import one_line

log = logging.getLogger(__name__)

ECGData = Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LoopSettings:
    """How a model is trained; the defaults are the pretraining recipe (`recipe`)."""

    epochs: int = recipe.EPOCHS
    batch_size: int = recipe.BATCH_SIZE
    lr: float = recipe.LR
    weight_decay: float = recipe.WEIGHT_DECAY
    warmup_epochs: float = recipe.WARMUP_EPOCHS
    grad_clip: float = 1.0
    seed: int = 0
    workers: int = 0
    amp: bool = True
    max_steps_per_epoch: int | None = None
    loss: LossWeights = field(default_factory=LossWeights)
    augment: Augmentation | None = None
    ema_decay: float | None = recipe.EMA_DECAY
    """Per-step decay of the weight average that is validated and saved; None: the weights."""


@dataclass
class StepInfo:
    epoch: int
    step: int
    steps: int
    loss: float
    records_per_s: float


@dataclass
class FitResult:
    best_epoch: int
    best_val_auroc: float
    history: list[dict[str, Any]]


class LabelBank(nn.Module):
    """The label vectors a model is trained against: fixed (pretraining) or learnable.

    ``vectors`` is (C, D), or (C, V, D) for several texts per label (views): then each training
    step draws one of the V texts for every label, so the model learns to match names,
    summaries and full knowledge alike; outside training the bank is the mean of the views,
    renormalised, as `encoders.text.label_matrix` combines them.
    """

    def __init__(self, vectors: torch.Tensor, *, trainable: bool = False) -> None:
        super().__init__()
        if vectors.ndim == 3 and trainable:
            raise ValueError("a bank of several views per label is not trainable")
        self.vectors = nn.Parameter(vectors.detach().clone().float(), requires_grad=trainable)

    def forward(self) -> torch.Tensor:
        if self.vectors.ndim == 2:
            return self.vectors
        if not self.training:
            return F.normalize(self.vectors.mean(1), dim=-1)
        labels, views, _ = self.vectors.shape
        pick = torch.randint(views, (labels,), device=self.vectors.device)
        return self.vectors[torch.arange(labels, device=pick.device), pick]


class Aligned(nn.Module):
    """Model and label bank as one module, so DDP synchronises both."""

    def __init__(self, model: KedModel, bank: LabelBank) -> None:
        super().__init__()
        self.model = model
        self.bank = bank

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.model(x, self.bank())

    def train(self, mode: bool = True) -> Aligned:
        """Train mode, except that frozen batch-norm layers keep their running statistics."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self


@dataclass
class Run:
    """Where and how a run is saved."""

    out: Path
    entries: list[LabelEntry]
    preprocessing: Preprocessing
    extra: dict[str, Any]
    resume: bool = False


def fit(
    model: KedModel,
    bank: LabelBank,
    train: ECGData,
    val: ECGData,
    settings: LoopSettings,
    run: Run,
    *,
    device: torch.device,
    on_step: Callable[[StepInfo], None] | None = None,
    loss_fn: AlignmentLoss | None = None,
) -> FitResult:
    """Train ``model`` (and a learnable ``bank``) with per-epoch validation and checkpoints.

    ``loss_fn`` defaults to the alignment loss of ``settings``; training items beyond
    ``(x, mask, targets)`` (e.g. report rows) are passed on to it."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    aligned = Aligned(model, bank).to(device)
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(train, world, rank, seed=settings.seed) if world > 1 else None
    )
    loader = DataLoader(
        train,
        batch_size=settings.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=settings.workers,
        drop_last=len(train) > settings.batch_size * world,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(settings.seed),
    )
    steps = len(loader)
    if settings.max_steps_per_epoch is not None:
        steps = min(steps, settings.max_steps_per_epoch)
    params = [p for p in aligned.parameters() if p.requires_grad]
    clip_groups = _clip_groups(aligned)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, round(steps * settings.warmup_epochs), steps * settings.epochs
    )
    loss_fn = (loss_fn or AlignmentLoss(settings.loss)).to(device)
    autocast, scaler = _mixed_precision(device, settings.amp)
    ema = _weight_average(aligned, settings.ema_decay)
    state = _resume(run.out / "last.pt", aligned, ema, optimizer, scheduler) if run.resume else {}
    evaluated = aligned if ema is None else cast(Aligned, ema.module)
    best = {"epoch": state.get("best_epoch", -1), "auroc": state.get("best_auroc", -math.inf)}
    history: list[dict[str, Any]] = list(state.get("history", []))
    trained = DistributedDataParallel(aligned) if world > 1 else aligned
    for epoch in range(state.get("epoch", 0), settings.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        trained.train()
        started, seen, losses = time.perf_counter(), 0, []
        for step, (x, _mask, targets, *extra) in enumerate(loader):
            if step >= steps:
                break
            x, targets = x.to(device), targets.to(device)
            if settings.augment is not None:
                x = settings.augment(x)
            with autocast():
                out = trained(x)
                terms = _tower_terms(loss_fn, out, targets, [item.to(device) for item in extra])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            scaler.unscale_(optimizer)
            for group in clip_groups:
                torch.nn.utils.clip_grad_norm_(group, settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(aligned)
            seen += len(x) * world
            losses.append(float(terms["loss"].detach()) / model.config.members)
            if on_step and rank == 0:
                rate = seen / (time.perf_counter() - started)
                on_step(StepInfo(epoch, step + 1, steps, losses[-1], rate))
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": scheduler.get_last_lr()[0],
            "train_records_per_s": seen / (time.perf_counter() - started),
        }
        if rank == 0:
            evaluated.eval()
            vectors = evaluated.bank().detach()
            scores, targets = predict(evaluated.model, val, vectors, settings.batch_size, device)
            record["val_macro_auroc"], record["val_labels_defined"] = macro_auroc(scores, targets)
            history.append(record)
            _append_jsonl(run.out / "metrics.jsonl", record)
            log.info("epoch %d: %s", epoch + 1, record)
            if record["val_macro_auroc"] > best["auroc"]:
                best = {"epoch": epoch + 1, "auroc": record["val_macro_auroc"]}
                save_checkpoint(
                    run.out / "best.safetensors",
                    evaluated.model,
                    vectors.cpu(),
                    run.entries,
                    run.preprocessing,
                    {**run.extra, "epoch": epoch + 1, "val": record},
                )
            _save_state(
                run.out / "last.pt", aligned, ema, optimizer, scheduler, epoch + 1, best, history
            )
        if world > 1:
            dist.barrier()
    return FitResult(best["epoch"], best["auroc"], history)


def _tower_terms(
    loss_fn: AlignmentLoss, out: ModelOutput, targets: torch.Tensor, extra: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The loss terms of each of the model's towers on its own output: ``loss`` is their sum,
    so each tower learns as if trained alone, the other terms their means."""
    parts = [
        loss_fn(m.logits, m.ecg_embeddings, m.label_embeddings, targets, *extra)
        for m in out.members or (out,)
    ]
    terms = {name: torch.stack([p[name] for p in parts]).mean() for name in parts[0]}
    terms["loss"] = torch.stack([p["loss"] for p in parts]).sum()
    return terms


def _clip_groups(aligned: Aligned) -> list[list[nn.Parameter]]:
    """The trainable parameters by tower, each group's gradient clipped on its own as if
    trained alone: the first tower with the label side and the bank, then every other tower."""
    others = [[p for p in t.parameters() if p.requires_grad] for t in aligned.model.others]
    theirs = {id(p) for group in others for p in group}
    rest = [p for p in aligned.parameters() if p.requires_grad and id(p) not in theirs]
    return [rest, *others]


def _mixed_precision(device: torch.device, enabled: bool) -> tuple[Any, torch.amp.GradScaler]:
    if not enabled or device.type != "cuda":
        return nullcontext, torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _weight_average(aligned: Aligned, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``aligned``'s weights and buffers, or None."""
    if decay is None:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    return AveragedModel(aligned, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _save_state(
    path: Path,
    aligned: Aligned,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    epoch: int,
    best: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    state = {
        "model": aligned.state_dict(),
        "ema": None if ema is None else ema.state_dict(),
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
    path: Path,
    aligned: Aligned,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> dict[str, Any]:
    if not path.is_file():
        log.warning("nothing to resume in %s; starting from scratch", path.parent)
        return {}
    state = load_training_state(path)
    try:
        aligned.load_state_dict(state["model"])
        if (ema is None) != (state.get("ema") is None):
            raise ValueError("weight averaging (ema_decay) differs from the run's")
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot resume this run from it ({one_line(exc)}); resume with the "
            "options the run was started with, or delete it to train from scratch"
        ) from exc
    log.info("resuming %s after epoch %d", path.parent, state["epoch"])
    return dict(state)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
