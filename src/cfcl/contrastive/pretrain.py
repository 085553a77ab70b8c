"""``cfcl pretrain``: one run of a method of :data:`cfcl.contrastive.methods.METHODS` (SimCLR or DINO
family), writing ``encoder.pt``.

Stores are opened and cross-checked before anything trains. A folder holding an unfinished run
of the same config and inputs resumes from ``checkpoints/last.ckpt`` (bit-exact on the same
machine), by the resume policy of :mod:`cfcl.stage`.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from cfcl import layout
from cfcl.contrastive.augment import build_augment
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.data import PretrainData, ViewBatches, open_pretrain_data
from cfcl.contrastive.dino_module import DinoModule
from cfcl.contrastive.encoders import build_encoder, save_encoder
from cfcl.contrastive.heads import projection_head
from cfcl.contrastive.methods import METHODS, default_cf_store
from cfcl.contrastive.module import ContrastiveModule
from cfcl.contrastive.timm_encoders import with_image_size
from cfcl.errors import ConfigError
from cfcl.loaders import step_loader, trainer_progress
from cfcl.plotting import training_curve
from cfcl.stage import Stage, run_stage
from cfcl.training import fit, loader_workers, make_trainer, uses_cuda

STAGE = layout.PRETRAIN


def cf_views(config: PretrainConfig, data: PretrainData) -> int:
    """Counterfactual views per image: as configured, else 1, or every other domain for the multi-positive methods."""
    others = len(data.targets) - 1
    multi = METHODS[config.method].multi_positive
    n = config.n_cf_views or (others if multi else 1)
    if multi and n < 2:
        raise ConfigError(f"method {config.method!r} needs n_cf_views >= 2; {data.data.path} allows {n}")
    if n > max(1, others):
        raise ConfigError(f"n_cf_views {n} exceeds the {others} other in-distribution domains of {data.data.path}")
    return n


def build_module(config: PretrainConfig, image_size: tuple[int, int], n_classes: int) -> ContrastiveModule:
    encoder = build_encoder(
        config.encoder.arch,
        config.encoder.pretrained_weights,
        **with_image_size(config.encoder.arch, config.encoder.arch_kwargs, image_size),
    )
    if config.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    if config.compile:
        encoder.compile()  # in place: the state dict keeps its keys, so encoder.pt and checkpoints do not change
    return ContrastiveModule(
        encoder,
        projection_head(encoder.feature_dim, config.projection),
        build_augment(config.augment.resolve(), image_size),
        temperature=config.temperature,
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        cosine=config.schedule == "cosine",
        seed=config.seed,
        n_classes=n_classes if config.online_probe else None,
        channels_last=config.channels_last,
        stop_skipped_fraction=config.stop_skipped_fraction,
    )


def global_size(config: PretrainConfig, data: PretrainData) -> tuple[int, int]:
    """The DINO global crops' size (default: the store's), checked against the local crops before training."""
    size = (config.dino.global_size,) * 2 if config.dino.global_size else data.image_size
    if config.dino.local_size > min(size):
        raise ConfigError(
            f"dino.local_size {config.dino.local_size} is larger than the global crops "
            f"({size[0]}x{size[1]}, dino.global_size)"
        )
    return size


def build_dino_module(config: PretrainConfig, data: PretrainData, steps_per_epoch: int) -> DinoModule:
    size = global_size(config, data)
    arch_kwargs = with_image_size(config.encoder.arch, config.encoder.arch_kwargs, size)
    return DinoModule(
        lambda: build_encoder(config.encoder.arch, config.encoder.pretrained_weights, **arch_kwargs),
        config.dino,
        config.augment.resolve(),
        size,
        lr=config.lr,
        cosine=config.schedule == "cosine",
        steps_per_epoch=steps_per_epoch,
        seed=config.seed,
        n_classes=len(data.data.labels) if config.online_probe else None,
        stop_skipped_fraction=config.stop_skipped_fraction,
    )


def saved_encoder(method: str) -> str:
    """The module attribute whose weights ``encoder.pt`` holds (and checkpoints hold under that prefix):
    DINO evaluates its teacher, the SimCLR family its one encoder."""
    return "teacher_encoder" if METHODS[method].family == "dino" else "encoder"


def run(config: PretrainConfig, out: Path, force: bool = False) -> dict:
    cf_path = config.cf_store or default_cf_store(config.method, config.data)
    data = open_pretrain_data(config.method, config.data, cf_path, config.split)
    n_cf_views = cf_views(config, data)
    size = global_size(config, data) if config.dino is not None else data.image_size
    with_image_size(config.encoder.arch, config.encoder.arch_kwargs, size)  # a ViT's patches must tile them
    inputs = {"cf_store": data.cf.path} if data.cf is not None else {}  # the oracle's default is not in the config
    return run_stage(
        STAGE, out, config, lambda stage: _train(config, data, n_cf_views, stage), force, inputs, every_rank=True
    )


def _train(config: PretrainConfig, data: PretrainData, n_cf_views: int, stage: Stage) -> dict | None:
    out = stage.out
    L.seed_everything(config.seed, workers=True)
    trainer = make_trainer(config.trainer, out, use_distributed_sampler=False)
    n_local = config.dino.n_local if config.dino is not None else 0
    batches = ViewBatches(
        data, config.method, config.batch_size, config.seed, config.p_replace, config.p_cf, n_cf_views, n_local
    )
    if METHODS[config.method].family == "dino":
        module = build_dino_module(config, data, batches.batches_per_epoch(trainer.world_size))
    else:
        module = build_module(config, data.image_size, len(data.data.labels))
    loader = step_loader(
        batches, trainer_progress(trainer), loader_workers(config.trainer), pin_memory=uses_cuda(config.trainer)
    )
    started = time.time()
    fit(trainer, module, loader, ckpt_path=stage.resume_from)
    stage.timed("fit", time.time() - started)
    if not stage.primary:
        return None
    info = {"image_size": list(data.image_size), "method": config.method, "seed": config.seed}
    encoder = getattr(module, saved_encoder(config.method))
    encoder_path = save_encoder(out, encoder, info)
    training_curve(
        out / layout.TRAINER_LOG, out / layout.LOSS_CURVE, ["train/loss_step", "train/loss_epoch", "probe/accuracy"]
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return dict(
        artefacts={"encoder": encoder_path.name, "loss_curve": layout.LOSS_CURVE},
        metrics=metrics,
        steps=trainer.global_step,
        resumed_from=str(stage.resume_from) if stage.resume_from else None,
        images_seen=trainer.global_step * config.batch_size * trainer.world_size,
        summary=f"{config.method}, {trainer.global_step} steps; {encoder_path.name}",
    )
