"""``cfcl cf finetune``: counterfactual fine-tuning of a trained generator with a guidance classifier."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from cfcl import layout
from cfcl.counterfactual import figures
from cfcl.counterfactual.classifier import classifier_file, load_classifier
from cfcl.counterfactual.config import CFFinetuneConfig
from cfcl.counterfactual.data import ParentImageDataset, image_loader, split_batch, split_indices
from cfcl.counterfactual.finetune_module import CounterfactualFinetuneModule
from cfcl.counterfactual.generator import generator_file, load_generator, save_generator
from cfcl.counterfactual.hvae import HVAE
from cfcl.counterfactual.losses import elbo_terms
from cfcl.counterfactual.parents import ParentSpec
from cfcl.counterfactual.train import grid_batch, open_image_store
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CheckpointError, ConfigError
from cfcl.plotting import training_curve
from cfcl.stage import Stage, run_stage
from cfcl.training import loader_workers, make_trainer

STAGE = layout.CF_FINETUNE


def load_guide(path: Path) -> tuple[torch.nn.Module, dict]:
    """The scanner guidance classifier; a judge is refused, so quality is never judged by the model that guided."""
    guide, info = load_classifier(path)
    if info.get("role") != "guide":
        raise ConfigError(f"{path} is a '{info.get('role')}' classifier; fine-tuning needs a guide (the judge never guides)")
    if info["parent"] != "domain":
        raise ConfigError(
            f"{path} classifies '{info['parent']}'; counterfactual fine-tuning is guided by a scanner (domain) guide"
        )
    return guide, info


def domain_spec(model: HVAE) -> ParentSpec:
    spec = next((s for s in model.specs if s.name == "domain"), None)
    if spec is None or len(spec.seen) < 2:
        raise CheckpointError("counterfactual fine-tuning needs a generator with a 'domain' parent of two or more domains")
    return spec


@torch.no_grad()
def mean_nelbo(model: HVAE, loader, batches: int) -> float:
    """Mean negative ELBO (nats per pixel) of the first ``batches`` batches."""
    values = []
    for i, batch in enumerate(loader):
        if i == batches:
            break
        x, pa = split_batch(batch)
        values.append(float(elbo_terms(model, x, pa)["nelbo"]))
    return sum(values) / len(values)


def run(config: CFFinetuneConfig, out: Path, force: bool = False) -> dict:
    store = open_image_store(config.data)
    model, gen_info = load_generator(config.generator)
    guide, guide_info = load_guide(config.guide)
    if list(guide_info["values"]) != store.domains or gen_info.get("domains") != store.domains:
        raise CheckpointError(
            f"domains differ: store {store.domains}, generator {gen_info.get('domains')}, guide {guide_info['values']}"
        )
    inputs = {"data": store.path / INFO, "generator": generator_file(config.generator), "guide": classifier_file(config.guide)}
    return run_stage(STAGE, out, config, lambda stage: _finetune(config, store, model, gen_info, guide, stage), force, inputs, every_rank=True)


def _finetune(
    config: CFFinetuneConfig, store: ImageStore, model: HVAE, gen_info: dict, guide: torch.nn.Module, stage: Stage
) -> dict | None:
    out = stage.out
    spec = domain_spec(model)
    L.seed_everything(config.seed, workers=True)
    train_set = ParentImageDataset(store, split_indices(store, config.splits), model.specs)
    loader = image_loader(train_set, config.batch_size, shuffle=True, seed=config.seed, num_workers=loader_workers(config.trainer))
    initial = mean_nelbo(model, loader, config.bound_batches)
    bound = config.elbo_bound if config.elbo_bound is not None else initial * (1 + config.elbo_tolerance)
    model.requires_grad_(True).train()
    module = CounterfactualFinetuneModule(
        model, guide, list(spec.seen), bound=bound, lr=config.lr, weight_decay=config.weight_decay,
        multiplier_init=config.multiplier_init, multiplier_lr=config.multiplier_lr,
        round_trip_bound=config.round_trip_bound, round_trip_multiplier_init=config.round_trip_multiplier_init,
        round_trip_multiplier_lr=config.round_trip_multiplier_lr,
        grad_clip=config.grad_clip, grad_skip=config.grad_skip, ema_decay=config.ema_decay,
    )
    trainer = make_trainer(config.trainer, out, num_sanity_val_steps=0)
    started = time.time()
    trainer.fit(module, loader, ckpt_path=stage.resume_from, weights_only=True)
    stage.timed("fit", time.time() - started)
    if not stage.primary:
        return None
    tuned = module.ema_model.cpu().eval().requires_grad_(False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    info = {
        **{k: gen_info[k] for k in ("store", "domains", "splits") if k in gen_info},
        "finetuned_from": stage.inputs["generator"]["fingerprint"], "guide": stage.inputs["guide"]["fingerprint"],
        "elbo_bound": bound, "initial_nelbo": initial, "steps": trainer.global_step,
        "skipped_updates": int(module.skipped), "parameters": sum(p.numel() for p in tuned.parameters()), "metrics": metrics,
    }
    generator_path = save_generator(out, tuned, info)
    x, pa = split_batch(grid_batch(train_set, config.grid_images))
    figures.counterfactual_grid(tuned, x, pa, out / "counterfactual_grid.png")
    training_curve(
        out / layout.TRAINER_LOG, out / layout.TRAINING_CURVE,
        [
            "train/ce_step", "train/nelbo_step", "train/multiplier_step", "train/guide_accuracy_step",
            "train/round_trip_mae_step", "train/round_trip_multiplier_step",
        ],
    )
    return dict(artefacts={"generator": generator_path.name}, metrics=metrics, elbo_bound=bound, initial_nelbo=initial)
