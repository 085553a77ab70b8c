"""``cfcl cf classifier``: train a scanner classifier on real in-distribution images.

Class-weighted cross-entropy (prevalences are imbalanced), light geometric augmentation only
(intensity is what distinguishes scanners), and the epoch with the best validation balanced
accuracy is kept, with early stopping on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from pydantic import Field
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from cfcl.config import StrictModel
from cfcl.counterfactual.classifier import (
    DomainClassifier,
    balanced_class_weights,
    build_classifier,
    save_classifier,
)
from cfcl.counterfactual.data import ParentImageDataset, split_batch, split_indices
from cfcl.counterfactual.parents import parent_specs
from cfcl.counterfactual.quality import balanced_accuracy
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import ConfigError, StoreError
from cfcl.stage import Stage, run_stage
from cfcl.training import TrainerConfig, make_trainer

STAGE = {"guide": "cf_guide", "judge": "cf_judge"}  # by role: the run folder each role is trained into
MONITOR = "val_balanced_accuracy"


class AugmentConfig(StrictModel):
    """Random affine jitter; no intensity changes, which would blur the scanner signal."""

    p: float = Field(0.8, ge=0, le=1)
    degrees: float = Field(5.0, ge=0)
    translate: float = Field(0.05, ge=0, le=0.5)
    scale: float = Field(0.05, ge=0, lt=1)


class ClassifierConfig(StrictModel):
    data: Path | None = None
    role: Literal["guide", "judge"] = "guide"
    arch: str = "cnn"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 1
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = "test"
    max_train_images: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(3, ge=1)
    stop_above: float | None = Field(0.995, gt=0, lt=1)  # stop once validation balanced accuracy exceeds it
    augment: AugmentConfig | None = Field(default_factory=AugmentConfig)
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(max_epochs=15))


class DomainClassifierModule(L.LightningModule):
    """Thin Lightning wrapper: weighted cross-entropy, validation confusion matrix -> balanced accuracy."""

    def __init__(self, model: DomainClassifier, class_weights: torch.Tensor, cfg: ClassifierConfig):
        super().__init__()
        self.model = model
        self.register_buffer("class_weights", class_weights)
        self.lr, self.weight_decay = cfg.lr, cfg.weight_decay
        aug = cfg.augment
        self.augment = (
            K.RandomAffine(
                degrees=aug.degrees, translate=(aug.translate, aug.translate),
                scale=(1 - aug.scale, 1 + aug.scale), padding_mode="border", p=aug.p,
            )
            if aug is not None
            else None
        )
        self.val_confusion = MulticlassConfusionMatrix(num_classes=model.n_domains)

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        if self.augment is not None:
            x = self.augment(x).clamp(0, 1)
        loss = F.cross_entropy(self.model(x), pa["domain"], weight=self.class_weights)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        self.val_confusion.update(self.model(x).argmax(dim=1), pa["domain"])

    def on_validation_epoch_end(self):
        self.log(MONITOR, balanced_accuracy(self.val_confusion.compute()), prog_bar=True)
        self.val_confusion.reset()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@torch.no_grad()
def evaluate_balanced_accuracy(model: DomainClassifier, dataset: ParentImageDataset, batch_size: int) -> dict[str, Any]:
    """Balanced accuracy and per-domain recall of ``model`` on ``dataset``."""
    model.eval()
    device = next(model.parameters()).device
    predicted = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        x, _ = split_batch(batch)
        predicted.append(model(x.to(device)).argmax(dim=1).cpu())
    confusion = confusion_matrix(dataset.domains, torch.cat(predicted).numpy(), labels=np.arange(model.n_domains))
    support = confusion.sum(axis=1)
    recall = {int(d): float(confusion[d, d] / support[d]) for d in np.flatnonzero(support)}
    return {"balanced_accuracy": balanced_accuracy(confusion), "recall": recall}


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
    loader_args = dict(batch_size=config.batch_size, num_workers=config.trainer.num_workers)
    started = time.time()
    trainer.fit(
        DomainClassifierModule(model, weights, config),
        DataLoader(train_set, shuffle=True, drop_last=len(train_set) > config.batch_size * trainer.world_size, **loader_args),
        DataLoader(val_set, **loader_args),
        ckpt_path=stage.resume_from,
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
