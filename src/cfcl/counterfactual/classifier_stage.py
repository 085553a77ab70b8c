"""``cfcl cf classifier``: train a scanner classifier on real in-distribution images.

Class-weighted cross-entropy (prevalences are imbalanced), light geometric augmentation only
(intensity is what distinguishes scanners), and the epoch with the best validation balanced
accuracy is kept, with early stopping on it. The stage is named by the classifier's role, as
its run folder: ``cf_guide`` guides fine-tuning, ``cf_judge`` judges quality.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader

from cfcl import layout
from cfcl.counterfactual.classifier import balanced_class_weights, build_classifier, save_classifier
from cfcl.counterfactual.classifier_module import MONITOR, DomainClassifierModule, evaluate_balanced_accuracy
from cfcl.counterfactual.config import ClassifierConfig
from cfcl.counterfactual.data import ParentImageDataset, split_indices
from cfcl.counterfactual.parents import parent_specs
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import ConfigError, StoreError
from cfcl.stage import Stage, run_stage
from cfcl.training import loader_workers, make_trainer

STAGE = {"guide": layout.CF_GUIDE, "judge": layout.CF_JUDGE}  # by role: the run folder each role is trained into


def run(config: ClassifierConfig, out: Path, force: bool = False) -> dict:
    if config.data is None:
        raise ConfigError("config key 'data' is not set: pass --data STORE (an image store folder)")
    store = ImageStore.open(config.data)
    if store.kind != "images":
        raise StoreError(f"{store.path} is a {store.kind} store; a classifier is trained on real images")
    return run_stage(STAGE[config.role], out, config, lambda stage: _train(config, store, stage), force, {"data": store.path / INFO}, every_rank=True)


def _train(config: ClassifierConfig, store: ImageStore, stage: Stage) -> dict | None:
    out = stage.out
    n_domains = len(store.domains)
    L.seed_everything(config.seed, workers=True)
    model = build_classifier(config.arch, n_domains, **config.arch_kwargs)

    specs = parent_specs(store, ["domain"])
    train_idx = split_indices(store, [config.train_split])
    if config.max_train_images is not None and len(train_idx) > config.max_train_images:
        rng = np.random.default_rng(config.seed)
        train_idx = np.sort(rng.choice(train_idx, config.max_train_images, replace=False))
    train_set = ParentImageDataset(store, train_idx, specs)
    val_set = ParentImageDataset(store, split_indices(store, [config.val_split]), specs)
    weights = balanced_class_weights(train_set.domains, n_domains)

    best = ModelCheckpoint(
        dirpath=out / "checkpoints" / "best", filename="best", monitor=MONITOR, mode="max", save_top_k=1
    )
    stop = EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience, stopping_threshold=config.stop_above)
    trainer = make_trainer(config.trainer, out, callbacks=[best, stop], num_sanity_val_steps=0)
    loader_args = dict(batch_size=config.batch_size, num_workers=loader_workers(config.trainer))
    started = time.time()
    trainer.fit(
        DomainClassifierModule(model, weights, config),
        DataLoader(train_set, shuffle=True, drop_last=len(train_set) > config.batch_size * trainer.world_size, **loader_args),
        DataLoader(val_set, **loader_args),
        ckpt_path=stage.resume_from, weights_only=True,
    )
    stage.timed("train", time.time() - started)
    if not stage.primary:
        return None

    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    metrics = {"val": evaluate_balanced_accuracy(model, val_set, config.batch_size)}
    if config.test_split is not None:
        metrics["test"] = evaluate_balanced_accuracy(
            model, ParentImageDataset(store, split_indices(store, [config.test_split]), specs), config.batch_size
        )
    info = {
        "role": config.role,
        "domains": store.domains,
        "trained_domains": sorted(int(d) for d in np.unique(train_set.domains)),
        "image_size": list(store.size),
        "seed": config.seed,
        "val_balanced_accuracy": metrics["val"]["balanced_accuracy"],
        "test_balanced_accuracy": metrics.get("test", {}).get("balanced_accuracy"),
        "epochs": int(trainer.current_epoch),
    }
    save_classifier(out, model, info)
    return dict(role=config.role, arch=config.arch, metrics=metrics, epochs=info["epochs"])
