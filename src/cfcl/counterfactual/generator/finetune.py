"""``cfcl cf finetune``: counterfactual fine-tuning of a trained generator guided by a classifier of each guided parent
(docs/architecture.md, "Counterfactual fine-tuning")."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from cfcl import layout
from cfcl.counterfactual.classifier.model import classifier_file, load_classifier
from cfcl.counterfactual.config import CFFinetuneConfig
from cfcl.counterfactual.data import ParentImageDataset, split_batch, split_indices, training_batches
from cfcl.counterfactual.generator import figures
from cfcl.counterfactual.generator.checkpoint import generator_file, load_generator, save_generator
from cfcl.counterfactual.generator.finetune_module import CounterfactualFinetuneModule
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.losses import elbo_terms
from cfcl.counterfactual.generator.train import grid_batch, open_image_store
from cfcl.counterfactual.parents import ParentSpec, known_values, require_two_values, value_names
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CheckpointError, ConfigError
from cfcl.loaders import step_loader, trainer_progress
from cfcl.plotting import training_curve
from cfcl.stage import Stage, run_stage
from cfcl.training import fit, loader_workers, make_trainer

STAGE = layout.CF_FINETUNE


def guide_inputs(config: CFFinetuneConfig) -> dict[str, Path]:
    """The guides by their key among the stage inputs, as the config's paths are recorded: ``guide``, or
    ``guide.<i>`` for a list of them."""
    if isinstance(config.guide, list):
        return {f"guide.{i}": path for i, path in enumerate(config.guide)}
    return {"guide": config.guide}


def load_guides(paths: list[Path], specs: list[ParentSpec], generator: Path) -> dict[str, torch.nn.Module]:
    """The guide of each guided parent, in the order given: a ``guide`` (the judge never guides, so quality is
    never judged by a model that guided) of a distinct discrete parent the generator is conditioned on, with
    two known values or more, whose values it names as the generator does (``specs``: the generator's parents)."""
    by_name = {s.name: s for s in specs}
    guides: dict[str, torch.nn.Module] = {}
    for path in paths:
        guide, info = load_classifier(path)
        file, parent = classifier_file(path), info["parent"]
        if info.get("role") != "guide":
            raise ConfigError(
                f"{file} is a '{info.get('role')}' classifier; fine-tuning needs a guide (the judge never guides)"
            )
        if parent in guides:
            raise ConfigError(
                f"{file} classifies '{parent}' as another guide does; fine-tuning takes one guide per parent"
            )
        spec = by_name.get(parent)
        if spec is None:
            raise ConfigError(
                f"{file} classifies '{parent}'; generator {generator} was conditioned on {', '.join(by_name)} only"
            )
        require_two_values(
            spec, f"guide parent '{parent}' of generator {generator}", "in the training split", ConfigError
        )
        if list(info["values"]) != value_names(spec):
            raise CheckpointError(
                f"{file} names the values of '{parent}' {list(info['values'])}; generator {generator} names them "
                f"{value_names(spec)}"
            )
        guides[parent] = guide
    return guides


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
    generator = generator_file(config.generator)
    if gen_info.get("domains") != store.domains:
        raise CheckpointError(
            f"generator {generator} has domains {gen_info.get('domains')}; the store {store.path} has {store.domains}"
        )
    guide_paths = guide_inputs(config)
    guides = load_guides(list(guide_paths.values()), model.specs, generator)
    inputs = {
        "data": store.path / INFO,
        "generator": generator,
        **{key: classifier_file(path) for key, path in guide_paths.items()},
    }
    return run_stage(
        STAGE,
        out,
        config,
        lambda stage: _finetune(config, store, model, gen_info, guides, stage),
        force,
        inputs,
        every_rank=True,
    )


def _finetune(
    config: CFFinetuneConfig,
    store: ImageStore,
    model: HVAE,
    gen_info: dict,
    guides: dict[str, torch.nn.Module],
    stage: Stage,
) -> dict | None:
    out = stage.out
    specs = {s.name: s for s in model.specs}
    L.seed_everything(config.seed, workers=True)
    train_set = ParentImageDataset(store, split_indices(store, config.splits), model.specs)
    trainer = make_trainer(config.trainer, out, num_sanity_val_steps=0, use_distributed_sampler=False)
    batches = training_batches(train_set, config.batch_size, config.seed)
    loader = step_loader(batches, trainer_progress(trainer), loader_workers(config.trainer))
    initial = mean_nelbo(model, loader, config.bound_batches)
    bound = config.elbo_bound if config.elbo_bound is not None else initial * (1 + config.elbo_tolerance)
    model.requires_grad_(True).train()
    module = CounterfactualFinetuneModule(
        model,
        guides,
        {parent: known_values(specs[parent]) for parent in guides},
        bound=bound,
        lr=config.lr,
        weight_decay=config.weight_decay,
        multiplier_init=config.multiplier_init,
        multiplier_lr=config.multiplier_lr,
        round_trip_bound=config.round_trip_bound,
        round_trip_multiplier_init=config.round_trip_multiplier_init,
        round_trip_multiplier_lr=config.round_trip_multiplier_lr,
        grad_clip=config.grad_clip,
        grad_skip=config.grad_skip,
        ema_decay=config.ema_decay,
    )
    started = time.time()
    fit(trainer, module, loader, ckpt_path=stage.resume_from)
    stage.timed("fit", time.time() - started)
    if not stage.primary:
        return None
    tuned = module.ema_model.cpu().eval().requires_grad_(False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    guided_by = [stage.inputs[key]["fingerprint"] for key in guide_inputs(config)]
    info = {
        **{k: gen_info[k] for k in ("store", "domains", "splits") if k in gen_info},
        "finetuned_from": stage.inputs["generator"]["fingerprint"],
        "guide": guided_by if isinstance(config.guide, list) else guided_by[0],
        "elbo_bound": bound,
        "initial_nelbo": initial,
        "steps": trainer.global_step,
        "skipped_updates": int(module.skipped),
        "parameters": sum(p.numel() for p in tuned.parameters()),
        "metrics": metrics,
    }
    generator_path = save_generator(out, tuned, info)
    per_parent = [
        f"train/{term}_{parent}_step" for parent in guides for term in ("ce", "guide_accuracy")
    ]  # logged for several
    x, pa = split_batch(grid_batch(train_set, config.grid_images))
    figures.counterfactual_grid(tuned, x, pa, out / "counterfactual_grid.png")
    training_curve(
        out / layout.TRAINER_LOG,
        out / layout.TRAINING_CURVE,
        [
            "train/ce_step",
            *per_parent,
            "train/nelbo_step",
            "train/multiplier_step",
            "train/guide_accuracy_step",
            "train/round_trip_mae_step",
            "train/round_trip_multiplier_step",
        ],
    )
    summary = (
        f"{trainer.global_step} steps of the decoder ({int(module.skipped)} skipped), -ELBO bound {bound:.4g}; "
        f"{generator_path.name}"
    )
    return dict(
        artefacts={"generator": generator_path.name},
        metrics=metrics,
        elbo_bound=bound,
        initial_nelbo=initial,
        summary=summary,
    )
