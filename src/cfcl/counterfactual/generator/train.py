"""``cfcl cf train``: fit the HVAE image mechanism on a store and write ``generator.pt``."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from cfcl import layout
from cfcl.counterfactual.config import CFTrainConfig
from cfcl.counterfactual.data import ParentImageDataset, split_batch, split_indices, training_batches
from cfcl.counterfactual.generator import figures
from cfcl.counterfactual.generator.checkpoint import save_generator
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.module import HVAETrainModule, scaled_lr_and_warmup
from cfcl.counterfactual.parents import ParentSpec, parent_specs
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CfclError, StoreError
from cfcl.loaders import ordered_loader, step_loader, trainer_progress
from cfcl.plotting import training_curve
from cfcl.stage import Stage, run_stage
from cfcl.training import fit, loader_workers, make_trainer

STAGE = layout.CF_MODEL


def open_image_store(path: Path) -> ImageStore:
    store = ImageStore.open(path)
    if store.kind != "images":
        raise StoreError(f"{path} is a {store.kind} store; the generator needs an image store")
    h, w = store.size
    if h != w:
        raise StoreError(f"image store {path} holds {h}x{w} images; the HVAE needs square images")
    return store


def evenly_spread(length: int, n: int) -> np.ndarray:
    """``min(n, length)`` positions spread evenly over ``range(length)``, the first and the last included."""
    return np.linspace(0, length - 1, min(n, length)).astype(int)


def validation_rows(store: ImageStore, config: CFTrainConfig) -> np.ndarray:
    """The store rows the generator is validated on: ``val_images`` of ``val_split`` spread evenly (none without
    either)."""
    rows = store.indices(config.val_split) if config.val_split else np.array([], dtype=int)
    return rows[evenly_spread(len(rows), config.val_images)]


def grid_batch(dataset: ParentImageDataset, n: int) -> dict[str, torch.Tensor]:
    """``n`` images spread evenly over the dataset, as one batch."""
    rows = evenly_spread(len(dataset), n)
    items = [dataset[i] for i in rows]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def training_module(config: CFTrainConfig, image_size: int, specs: list[ParentSpec]) -> HVAETrainModule:
    """A fresh HVAE of ``config.arch`` in its training module (optimizer, learning rate scaled to the batch,
    clipping, skipping, EMA, compiling and memory layout as configured)."""
    optim = config.optim
    lr, warmup_steps = scaled_lr_and_warmup(
        optim.lr, optim.warmup_steps, config.batch_size, optim.reference_batch, optim.lr_scaling
    )
    model = HVAE(image_size, config.arch, specs)
    if config.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return HVAETrainModule(
        model,
        beta=config.beta,
        lr=lr,
        weight_decay=optim.weight_decay,
        warmup_steps=warmup_steps,
        implementation=optim.implementation,
        compile=config.trainer.compile,
        grad_clip=optim.grad_clip,
        grad_skip=optim.grad_skip,
        ema_decay=optim.ema_decay,
    )


def run(config: CFTrainConfig, out: Path, force: bool = False) -> dict:
    store = open_image_store(config.data)
    return run_stage(
        STAGE,
        out,
        config,
        lambda stage: _train(config, store, stage),
        force,
        {"data": store.path / INFO},
        every_rank=True,
    )


def _train(config: CFTrainConfig, store: ImageStore, stage: Stage) -> dict | None:
    out = stage.out
    train_rows = split_indices(store, config.splits)
    specs = parent_specs(store, config.parents, train_rows)
    L.seed_everything(config.seed, workers=True)
    module = training_module(config, store.size[0], specs)
    train_set = ParentImageDataset(store, train_rows, specs)
    trainer = make_trainer(config.trainer, out, num_sanity_val_steps=0, use_distributed_sampler=False)
    batches = training_batches(train_set, config.batch_size, config.seed, config.balanced_sampling)
    loader = step_loader(batches, trainer_progress(trainer), loader_workers(config.trainer))
    val_rows = validation_rows(store, config)
    val_loader = (
        ordered_loader(ParentImageDataset(store, val_rows, specs), config.batch_size) if len(val_rows) else None
    )
    started = time.time()
    fit(trainer, module, loader, val_loader, ckpt_path=stage.resume_from)
    stage.timed("fit", time.time() - started)
    if not stage.primary:
        return None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    diverged = next((k for k in ("val/nelbo", "train/nelbo_epoch") if not math.isfinite(metrics.get(k, 0.0))), None)
    if diverged:
        raise CfclError(
            f"{out}: the generator diverged: {diverged} is {metrics[diverged]} after {trainer.global_step} steps "
            f"({int(module.skipped)} skipped); no generator written. Run again with --force and a lower optim.lr "
            "or a longer optim.warmup_steps"
        )
    ema = module.ema_model.cpu().eval()
    info = {
        "store": store.content_hash,
        "domains": store.domains,
        "splits": config.splits,
        "beta": config.beta,
        "steps": trainer.global_step,
        "skipped_updates": int(module.skipped),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "metrics": metrics,
    }
    generator_path = save_generator(out, ema, info)
    x, pa = split_batch(grid_batch(train_set, config.grid_images))
    figures.counterfactual_grid(ema, x, pa, out / "counterfactual_grid.png")
    figures.prior_samples(ema, pa, out / "prior_samples.png")
    training_curve(
        out / layout.TRAINER_LOG, out / layout.TRAINING_CURVE, ["train/nelbo_step", "train/kl_step", "val/nelbo"]
    )
    val = f", validation -ELBO {metrics['val/nelbo']:.4g}" if "val/nelbo" in metrics else ""
    summary = f"{trainer.global_step} steps ({int(module.skipped)} skipped){val}; {generator_path.name}"
    return dict(
        artefacts={"generator": generator_path.name}, metrics=metrics, parameters=info["parameters"], summary=summary
    )
