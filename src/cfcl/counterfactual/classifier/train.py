"""``cfcl cf classifier``: train a classifier of one discrete parent (the scanner by default) on real
in-distribution images.

Class-weighted cross-entropy (prevalences are imbalanced), light geometric augmentation only
(intensity is what distinguishes scanners), and the epoch with the best validation balanced
accuracy is kept, with early stopping on it. Images whose value of the parent is unknown (an
empty name, e.g. a missing sex) are left out. The stage is named by the classifier's role, as
its run folder: ``cf_guide`` guides fine-tuning, ``cf_judge`` judges quality (``cf_guide_sex`` and
``cf_judge_sex`` under ``cfcl run``: the guide and the judge of sex).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from cfcl import layout
from cfcl.counterfactual.classifier.model import balanced_class_weights, build_classifier, save_classifier
from cfcl.counterfactual.classifier.module import MONITOR, ParentClassifierModule, evaluate_balanced_accuracy
from cfcl.counterfactual.config import ClassifierConfig
from cfcl.counterfactual.data import ParentImageDataset, split_indices
from cfcl.counterfactual.parents import (
    ParentSpec,
    known_values,
    parent_specs,
    parents_from_store,
    require_two_values,
    value_names,
)
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import ConfigError, StoreError
from cfcl.loaders import DatasetBatches, ordered_loader, step_loader, trainer_progress
from cfcl.stage import Stage, run_stage
from cfcl.training import fit, loader_workers, make_trainer

STAGE = {"guide": layout.CF_GUIDE, "judge": layout.CF_JUDGE}  # by role: the run folder each role is trained into


def run(config: ClassifierConfig, out: Path, force: bool = False) -> dict:
    if config.data is None:
        raise ConfigError("config key 'data' is not set: pass --data STORE (an image store folder)")
    store = ImageStore.open(config.data)
    if store.kind != "images":
        raise StoreError(f"{store.path} is a {store.kind} store; a classifier is trained on real images")
    spec = classified_spec(store, config.parent, config.train_split)
    return run_stage(
        STAGE[config.role],
        out,
        config,
        lambda stage: _train(config, store, spec, stage),
        force,
        {"data": store.path / INFO},
        every_rank=True,
    )


def classified_spec(store: ImageStore, parent: str, split: str) -> ParentSpec:
    """The spec of ``parent``, which must be discrete with two known values or more in ``split``."""
    spec = parent_specs(store, [parent], split_indices(store, [split]))[0]
    require_two_values(
        spec, f"classify parent '{parent}' of image store {store.path}", f"in split {split}", ConfigError
    )
    return spec


def _known_rows(store: ImageStore, split: str, spec: ParentSpec) -> np.ndarray:
    """The images of ``split`` whose value of the parent is known."""
    rows = split_indices(store, [split])
    codes = parents_from_store(store, rows, [spec])[spec.name].numpy()
    return rows[np.isin(codes, known_values(parent_specs(store, [spec.name])[0]))]


def _train(config: ClassifierConfig, store: ImageStore, spec: ParentSpec, stage: Stage) -> dict | None:
    out = stage.out
    L.seed_everything(config.seed, workers=True)
    model = build_classifier(config.arch, spec.n_classes, **config.arch_kwargs)

    train_idx = _known_rows(store, config.train_split, spec)
    if config.max_train_images is not None and len(train_idx) > config.max_train_images:
        rng = np.random.default_rng(config.seed)
        train_idx = np.sort(rng.choice(train_idx, config.max_train_images, replace=False))
    train_set = ParentImageDataset(store, train_idx, [spec])
    val_set = ParentImageDataset(store, _known_rows(store, config.val_split, spec), [spec])
    trained = train_set.parents[config.parent].numpy()
    weights = balanced_class_weights(trained, spec.n_classes)

    best = ModelCheckpoint(
        dirpath=out / "checkpoints" / "best", filename="best", monitor=MONITOR, mode="max", save_top_k=1
    )
    stop = EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience, stopping_threshold=config.stop_above)
    trainer = make_trainer(
        config.trainer, out, callbacks=[best, stop], num_sanity_val_steps=0, use_distributed_sampler=False
    )
    workers = loader_workers(config.trainer)
    batches = DatasetBatches(
        train_set, config.batch_size, config.seed, drop_last=len(train_set) > config.batch_size * trainer.world_size
    )
    started = time.time()
    fit(
        trainer,
        ParentClassifierModule(model, weights, config),
        step_loader(batches, trainer_progress(trainer), workers),
        ordered_loader(val_set, config.batch_size, workers),
        ckpt_path=stage.resume_from,
    )
    stage.timed("train", time.time() - started)
    if not stage.primary:
        return None

    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    metrics = {"val": evaluate_balanced_accuracy(model, val_set, config.parent, config.batch_size)}
    if config.test_split is not None:
        test_set = ParentImageDataset(store, _known_rows(store, config.test_split, spec), [spec])
        metrics["test"] = evaluate_balanced_accuracy(model, test_set, config.parent, config.batch_size)
    info = {
        "role": config.role,
        "parent": config.parent,
        "values": value_names(spec),
        "trained_values": sorted(int(v) for v in np.unique(trained)),
        "image_size": list(store.size),
        "seed": config.seed,
        "val_balanced_accuracy": metrics["val"]["balanced_accuracy"],
        "test_balanced_accuracy": metrics.get("test", {}).get("balanced_accuracy"),
        "epochs": int(trainer.current_epoch),
    }
    save_classifier(out, model, info)
    summary = (
        f"{config.parent} {config.role}, {info['epochs']} epochs, validation balanced accuracy "
        f"{info['val_balanced_accuracy']:.3g}"
    )
    return dict(
        role=config.role,
        parent=config.parent,
        arch=config.arch,
        metrics=metrics,
        epochs=info["epochs"],
        summary=summary,
    )
