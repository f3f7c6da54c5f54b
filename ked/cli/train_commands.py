"""``ked pretrain`` and ``ked finetune``: train an ECG encoder against cached label vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from encoders.text import EncoderSpec
from encoders.training import recipe
from ked.cli.common import RescanOption, epoch_progress, require_label_source, settings
from ked.cli.text_options import text_encoder_options


@text_encoder_options(prefix="text-")
def pretrain_command(
    ctx: typer.Context,
    text: EncoderSpec,
    out: Annotated[Path, typer.Option(help="run folder (checkpoints, metrics.jsonl)")],
    data: Annotated[
        list[str] | None,
        typer.Option(
            help="dataset spec, e.g. ptbxl-array:/data/ptbxl_sample, a path, or 'sample'; repeat "
            "to train on several datasets (a label counts as negative only where a dataset "
            "reports it)"
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            help="train from a signal store ('ked data build') instead of --data: records stay "
            "on disk, memory-mapped and shared by every rank and loader worker"
        ),
    ] = None,
    vocab: Annotated[str | None, typer.Option(help="label vocabulary, e.g. ptbxl-all")] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--labels", help="labels instead of a vocabulary")
    ] = None,
    holdout: Annotated[
        list[str] | None, typer.Option(help="labels kept out of pretraining (for zero-shot tests)")
    ] = None,
    view: Annotated[
        list[str] | None,
        typer.Option(
            help="views trained against, one drawn per label and step "
            f"(default {', '.join(recipe.VIEWS)})"
        ),
    ] = None,
    encoder: Annotated[
        str, typer.Option(help="ECG encoder, e.g. xresnet1d101, xresnet1d_small")
    ] = recipe.ENCODER,
    head: Annotated[str, typer.Option(help="cosine or decoder")] = "cosine",
    adapter: Annotated[
        bool, typer.Option(help="train an MLP adapter on the label vectors")
    ] = False,
    center_labels: Annotated[
        bool, typer.Option(help="centre label vectors on the mean training text")
    ] = recipe.CENTER_LABELS,
    whiten_labels: Annotated[
        float,
        typer.Option(
            help="whiten label vectors, their covariance shrunk this much towards the identity "
            "(0: off; needs --center-labels)"
        ),
    ] = recipe.WHITEN_LABELS or 0.0,
    pooling: Annotated[
        str, typer.Option(help="ECG features over time: mean, or mean+max (concatenated)")
    ] = recipe.POOLING,
    members: Annotated[
        int,
        typer.Option(
            min=1,
            help="ECG towers trained side by side, each on its own loss, their logits averaged "
            "(a deep ensemble; time and memory grow with it)",
        ),
    ] = recipe.MEMBERS,
    augment: Annotated[
        bool, typer.Option(help="shift, gain, wander, noise and lead dropout in training")
    ] = recipe.AUGMENT,
    epochs: Annotated[int, typer.Option(min=1)] = recipe.EPOCHS,
    batch_size: Annotated[int, typer.Option(min=1)] = recipe.BATCH_SIZE,
    lr: Annotated[float, typer.Option()] = recipe.LR,
    weight_decay: Annotated[float, typer.Option()] = recipe.WEIGHT_DECAY,
    warmup_epochs: Annotated[float, typer.Option()] = recipe.WARMUP_EPOCHS,
    ema_decay: Annotated[
        float,
        typer.Option(
            help="validate and save an exponential moving average of the weights with this "
            "per-step decay, e.g. 0.99 (0: the weights themselves)"
        ),
    ] = recipe.EMA_DECAY or 0.0,
    bce_weight: Annotated[
        float, typer.Option(help="weight of the per-label sigmoid loss")
    ] = recipe.BCE_WEIGHT,
    contrastive_weight: Annotated[
        float, typer.Option(help="weight of the contrastive loss")
    ] = recipe.CONTRASTIVE_WEIGHT,
    temperature: Annotated[
        float, typer.Option(help="contrastive temperature")
    ] = recipe.TEMPERATURE,
    targets: Annotated[
        str,
        typer.Option(
            help="align recordings with label vectors, with the vectors of their report texts "
            "(datasets with machine reports, e.g. mimic-iv-ecg), or both: labels, reports, both"
        ),
    ] = recipe.TARGETS,
    workers: Annotated[int, typer.Option(min=0, help="data-loader worker processes")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="cuda, cpu (default: best available)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run folder's last.pt")] = False,
    max_steps_per_epoch: Annotated[
        int | None, typer.Option(help="cap steps per epoch (smoke tests)")
    ] = None,
    rescan: RescanOption = False,
) -> None:
    """Pretrain an ECG encoder against label vectors from the cache (embedded if missing).

    The defaults are the recipe behind the README's zero-shot figures.

    Multi-GPU or multi-node: launch with torchrun, e.g.
    ``torchrun --nproc_per_node 4 -m ked pretrain --store DIR ...``; each rank trains on its
    own LOCAL_RANK GPU.
    """
    from encoders.datasets import rescan_manifests
    from encoders.ecg import Preprocessing
    from encoders.models.ked_model import ModelConfig
    from encoders.training import LoopSettings, LossWeights, PretrainConfig, pretrain
    from encoders.training.augment import Augmentation

    require_label_source(vocab, labels)
    if head not in ("cosine", "decoder"):
        raise typer.BadParameter("--head is cosine or decoder")
    if targets not in recipe.TARGET_CHOICES:
        raise typer.BadParameter(f"--targets is one of {', '.join(recipe.TARGET_CHOICES)}")
    if (store is None) == (not data):
        raise typer.BadParameter("give exactly one of --data and --store")
    if whiten_labels and not center_labels:
        raise typer.BadParameter("--whiten-labels needs --center-labels (or --whiten-labels 0)")
    if pooling not in ("mean", "mean+max"):
        raise typer.BadParameter("--pooling is mean or mean+max")
    if not 0 <= ema_decay < 1:
        raise typer.BadParameter("--ema-decay is in [0, 1)")
    if rescan and data:
        rescan_manifests(data)
    config = PretrainConfig(
        data=tuple(data or ()),
        store=store,
        out=out,
        db=settings(ctx).db,
        knowledge_statuses=settings(ctx).knowledge_statuses,
        vocab=vocab,
        labels=tuple(labels or ()),
        holdout=tuple(holdout or ()),
        views=tuple(view or recipe.VIEWS),
        text=text,
        model=ModelConfig(
            encoder=encoder,
            head=head,  # type: ignore[arg-type]
            adapter=adapter,
            center_labels=center_labels,
            whiten_labels=whiten_labels or None,
            pooling=pooling,  # type: ignore[arg-type]
            members=members,
        ),
        preprocessing=Preprocessing(crop="random"),
        loop=LoopSettings(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            seed=seed,
            workers=workers,
            max_steps_per_epoch=max_steps_per_epoch,
            loss=LossWeights(bce_weight, contrastive_weight, temperature),
            augment=Augmentation() if augment else None,
            ema_decay=ema_decay or None,
        ),
        device=device,
        resume=resume,
        targets=targets,  # type: ignore[arg-type]
    )
    with epoch_progress("pretrain", epochs) as on_step:
        result = pretrain(config, on_step=on_step)
    for record in result.history:
        typer.echo(
            f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
            f"val macro AUROC {record['val_macro_auroc']:.4f} "
            f"({record['val_labels_defined']} labels)"
        )
    typer.echo(
        f"best epoch {result.best_epoch} (val macro AUROC {result.best_val_auroc:.4f}); "
        f"{len(result.train_labels)} training labels, {len(result.held_out)} held out; "
        f"checkpoint {out / 'best.safetensors'}"
    )


def finetune_command(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="pretrained run folder or checkpoint")],
    data: Annotated[str, typer.Option(help="dataset spec")],
    out: Annotated[Path, typer.Option(help="run folder for the adapted model")],
    vocab: Annotated[str | None, typer.Option(help="label vocabulary")] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--labels", help="labels instead of a vocabulary")
    ] = None,
    view: Annotated[
        list[str] | None, typer.Option(help="views (default: the checkpoint's)")
    ] = None,
    mode: Annotated[str, typer.Option(help="linear (label head only) or full")] = "linear",
    fraction: Annotated[
        float, typer.Option(help="share of the training split to use, e.g. 0.01")
    ] = 1.0,
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option()] = None,
    rescan: RescanOption = False,
) -> None:
    """Few-shot: adapt a checkpoint with a fraction of the training labels."""
    from encoders.datasets import rescan_manifests
    from encoders.training import LoopSettings
    from encoders.training.finetune import FinetuneConfig, finetune

    require_label_source(vocab, labels)
    if mode not in ("linear", "full"):
        raise typer.BadParameter("--mode is linear or full")
    if rescan:
        rescan_manifests([data])
    config = FinetuneConfig(
        checkpoint=checkpoint,
        data=data,
        out=out,
        db=settings(ctx).db,
        knowledge_statuses=settings(ctx).knowledge_statuses,
        vocab=vocab,
        labels=tuple(labels or ()),
        views=tuple(view) if view else None,
        mode=mode,  # type: ignore[arg-type]
        fraction=fraction,
        loop=LoopSettings(
            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, warmup_epochs=0.0
        ),
        device=device,
    )
    with epoch_progress("finetune", epochs) as on_step:
        result = finetune(config, on_step=on_step)
    typer.echo(
        f"{mode} on {result.train_records} records ({fraction:.0%} of train): best epoch "
        f"{result.best_epoch} (selection AUROC {result.best_val_auroc:.4f}); "
        f"{result.eval_split} macro AUROC {result.eval_auroc:.4f} "
        f"(zero-shot {result.zero_shot_eval_auroc:.4f}); checkpoint {out / 'best.safetensors'}"
    )
