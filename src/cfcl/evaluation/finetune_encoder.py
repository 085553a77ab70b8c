"""Full fine-tuning of an encoder plus a linear head, early stopping on validation AUROC.

The Lightning module only wires the encoder, the class-weighted loss and the validation AUROC
(:func:`cfcl.evaluation.metrics.auroc`): cross-entropy over the classes of ``label``, or for a multi-label
store one head over all its findings with a binary cross-entropy per finding from which missing findings are
masked out (:func:`masked_bce`; validation: the mean AUROC over findings). The trainer comes from
:func:`cfcl.training.make_trainer`, so checkpoints, resume and precision behave as in every other
stage. Evaluation runs on rank 0 alone (docs/architecture.md, "Several processes"), so these
small loops always train on one device.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from cfcl.evaluation.config import FinetuneConfig
from cfcl.evaluation.features import image_batch
from cfcl.evaluation.metrics import auroc
from cfcl.loaders import DatasetBatches, ordered_loader, step_loader, trainer_progress
from cfcl.training import fit, last_checkpoint, loader_workers, make_trainer, single_device

VAL_METRIC = "val_auroc"


class StoreRows(Dataset):
    """``(image [1, H, W] float32 in [0, 1], target)`` for the given store rows: the row of ``targets``, an integer
    label or a multi-label store's findings (float, NaN missing)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, rows: np.ndarray):
        self.images, self.targets, self.rows = images, targets, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        return image_batch(self.images, np.array([row]), torch.device("cpu"))[0], torch.as_tensor(self.targets[row])


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """``n / (n_classes * count)`` per class (scikit-learn's "balanced"); absent classes get 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def finding_weights(findings: np.ndarray) -> torch.Tensor:
    """``[2, F]``: per finding, :func:`class_weights` of its absent (row 0) and present (row 1) images among those
    where it is known."""
    known = ~np.isnan(findings)
    return torch.stack([class_weights(column[k].astype(np.int64), 2) for column, k in zip(findings.T, known.T)], 1)


def masked_bce(logits: torch.Tensor, findings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each finding, weighted by :func:`finding_weights` and averaged over the (image,
    finding) pairs where the finding is known: a missing finding (NaN) adds nothing to the loss or its gradient."""
    present = findings.nan_to_num(0.0)
    weight = torch.where(present > 0.5, weights[1], weights[0]) * ~findings.isnan()
    loss = F.binary_cross_entropy_with_logits(logits, present, reduction="none")
    return (weight * loss).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


class FinetuneModule(L.LightningModule):
    """Encoder + linear head trained end to end: ``n_outputs`` classes (softmax), or with ``multilabel`` one output
    per finding (sigmoid each)."""

    def __init__(
        self,
        encoder: nn.Module,
        n_outputs: int,
        weights: torch.Tensor,
        lr: float,
        weight_decay: float,
        multilabel: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, n_outputs)
        self.register_buffer("class_weights", weights)
        self.lr, self.weight_decay, self.multilabel = lr, weight_decay, multilabel
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n_outputs]``: class probabilities, or each finding's probability of being present."""
        logits = self(x).float()
        return logits.sigmoid() if self.multilabel else logits.softmax(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.multilabel:
            loss = masked_bce(self(x).float(), y, self.class_weights)
        else:
            loss = F.cross_entropy(self(x), y, weight=self.class_weights)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._val.append((self.probabilities(x), y))

    def on_validation_epoch_end(self):
        targets = torch.cat([t for _, t in self._val])
        prob = self.all_gather(torch.cat([p for p, _ in self._val])).reshape(-1, self.head.out_features)
        y = self.all_gather(targets).reshape(-1, *targets.shape[1:])
        self._val.clear()
        self.log(
            VAL_METRIC, auroc(y.cpu().numpy(), prob.cpu().numpy(), name="validation"), prog_bar=True, sync_dist=False
        )

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def finetune(
    encoder: nn.Module,
    images: np.ndarray,
    targets: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    n_outputs: int,
    cfg: FinetuneConfig,
    out: Path,
    seed: int,
) -> FinetuneModule:
    """Train on ``train_rows``, stop when validation AUROC stalls; returns the best epoch's model.

    ``targets``: labels ``[N]`` of ``n_outputs`` classes, or a multi-label store's findings ``[N, n_outputs]``
    (1 / 0 / NaN missing)."""
    L.seed_everything(seed, workers=True, verbose=False)
    multilabel = targets.ndim == 2
    if multilabel:
        targets = targets.astype(np.float32)
        weights = finding_weights(targets[train_rows])
    else:
        weights = class_weights(targets[train_rows], n_outputs)
    model = FinetuneModule(encoder, n_outputs, weights, cfg.lr, cfg.weight_decay, multilabel)
    workers = loader_workers(cfg.trainer)
    best = ModelCheckpoint(dirpath=out / "best", filename="best", monitor=VAL_METRIC, mode="max", save_top_k=1)
    stop = EarlyStopping(monitor=VAL_METRIC, mode="max", patience=cfg.patience)
    trainer = make_trainer(single_device(cfg.trainer), out, callbacks=[best, stop], num_sanity_val_steps=0)
    train = DatasetBatches(StoreRows(images, targets, train_rows), cfg.batch_size, seed, drop_last=False)
    val = ordered_loader(StoreRows(images, targets, val_rows), cfg.batch_size, workers)
    fit(trainer, model, step_loader(train, trainer_progress(trainer), workers), val, ckpt_path=last_checkpoint(out))
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    return model.eval()


@torch.inference_mode()
def predict_probabilities(
    model: FinetuneModule, images: np.ndarray, rows: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """``[len(rows), n_outputs]``: :meth:`FinetuneModule.probabilities`."""
    model.eval().to(device)
    chunks = [
        model.probabilities(image_batch(images, rows[s : s + batch_size], device)).cpu().numpy()
        for s in range(0, len(rows), batch_size)
    ]
    return np.concatenate(chunks)
