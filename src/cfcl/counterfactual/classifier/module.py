"""The parent classifier's thin Lightning module: class-weighted cross-entropy on lightly jittered
images (:class:`AffineJitter`), validation balanced accuracy from a confusion matrix."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from cfcl.counterfactual.classifier.model import ParentClassifier
from cfcl.counterfactual.config import ClassifierConfig, JitterConfig
from cfcl.counterfactual.data import ParentImageDataset, split_batch
from cfcl.counterfactual.quality.metrics import balanced_accuracy

MONITOR = "val_balanced_accuracy"


def affine_warp(
    images: torch.Tensor, angles: torch.Tensor, translations: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """``images [n, C, H, W]`` rotated by ``angles`` degrees (counter-clockwise) and scaled by ``scales``
    about the centre, then shifted by ``translations [n, 2]`` pixels (x, y); border padding, one
    bilinear resampling: kornia's ``warp_affine`` of ``get_affine_matrix2d``, as ``RandomAffine`` uses it."""
    _, _, height, width = images.shape
    theta = torch.deg2rad(angles)
    cos, sin = torch.cos(theta) / scales, torch.sin(theta) / scales
    cx, cy = (width - 1) / 2, (height - 1) / 2
    sx, sy = cx + translations[:, 0], cy + translations[:, 1]
    xs = torch.arange(width, device=images.device, dtype=images.dtype)
    ys = torch.arange(height, device=images.device, dtype=images.dtype)[:, None]
    # output pixel q -> input pixel c + R(-angle) (q - c - t) / scale
    x_in = cos[:, None, None] * xs + sin[:, None, None] * ys + (cx - cos * sx - sin * sy)[:, None, None]
    y_in = -sin[:, None, None] * xs + cos[:, None, None] * ys + (cy + sin * sx - cos * sy)[:, None, None]
    grid = torch.stack([x_in * (2 / max(width - 1, 1)) - 1, y_in * (2 / max(height - 1, 1)) - 1], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


class AffineJitter(torch.nn.Module):
    """kornia ``RandomAffine(degrees, translate, scale, padding_mode="border", p)``: per sample with
    probability ``p``, a rotation uniform in ``±degrees``, a shift uniform in ``±translate`` of the
    width and height and an isotropic scale uniform in ``1 ± scale``; the other samples pass unchanged."""

    def __init__(self, jitter: JitterConfig):
        super().__init__()
        self.jitter = jitter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        j = self.jitter

        def uniform(bound: float, *shape: int) -> torch.Tensor:
            return (2 * torch.rand(n, *shape, device=images.device, dtype=images.dtype) - 1) * bound

        extent = torch.tensor([width, height], device=images.device, dtype=images.dtype)
        warped = affine_warp(images, uniform(j.degrees), uniform(j.translate, 2) * extent, 1 + uniform(j.scale))
        chosen = torch.rand(n, device=images.device) < j.p
        return torch.where(chosen[:, None, None, None], warped, images)


class ParentClassifierModule(L.LightningModule):
    """Thin Lightning wrapper: weighted cross-entropy, validation confusion matrix -> balanced accuracy."""

    def __init__(self, model: ParentClassifier, class_weights: torch.Tensor, cfg: ClassifierConfig):
        super().__init__()
        self.model, self.parent = model, cfg.parent
        self.register_buffer("class_weights", class_weights)
        self.lr, self.weight_decay = cfg.lr, cfg.weight_decay
        self.augment = AffineJitter(cfg.augment) if cfg.augment is not None else None
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
