"""The parent classifier's thin Lightning module: class-weighted cross-entropy on lightly jittered
images, validation balanced accuracy from a confusion matrix."""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from cfcl.counterfactual.classifier import ParentClassifier
from cfcl.counterfactual.config import ClassifierConfig
from cfcl.counterfactual.data import ParentImageDataset, split_batch
from cfcl.counterfactual.quality import balanced_accuracy

MONITOR = "val_balanced_accuracy"


class ParentClassifierModule(L.LightningModule):
    """Thin Lightning wrapper: weighted cross-entropy, validation confusion matrix -> balanced accuracy."""

    def __init__(self, model: ParentClassifier, class_weights: torch.Tensor, cfg: ClassifierConfig):
        super().__init__()
        self.model, self.parent = model, cfg.parent
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
        self.val_confusion = MulticlassConfusionMatrix(num_classes=model.n_classes)

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        if self.augment is not None:
            x = self.augment(x).clamp(0, 1)
        loss = F.cross_entropy(self.model(x), pa[self.parent], weight=self.class_weights)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        self.val_confusion.update(self.model(x).argmax(dim=1), pa[self.parent])

    def on_validation_epoch_end(self):
        self.log(MONITOR, balanced_accuracy(self.val_confusion.compute()), prog_bar=True)
        self.val_confusion.reset()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@torch.no_grad()
def evaluate_balanced_accuracy(
    model: ParentClassifier, dataset: ParentImageDataset, parent: str, batch_size: int
) -> dict[str, Any]:
    """Balanced accuracy and per-class recall of ``model`` on ``dataset``, classifying ``parent``."""
    model.eval()
    device = next(model.parameters()).device
    predicted = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        x, _ = split_batch(batch)
        predicted.append(model(x.to(device)).argmax(dim=1).cpu())
    confusion = confusion_matrix(
        dataset.parents[parent].numpy(), torch.cat(predicted).numpy(), labels=np.arange(model.n_classes)
    )
    support = confusion.sum(axis=1)
    recall = {int(d): float(confusion[d, d] / support[d]) for d in np.flatnonzero(support)}
    return {"balanced_accuracy": balanced_accuracy(confusion), "recall": recall}
