"""Thin Lightning modules around the HVAE: EMA weights, clipping with update skipping, ELBO training."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel

from cfcl.counterfactual.data import split_batch
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.losses import elbo_terms


def ema_decay(n_averaged: int, decay: float) -> float:
    """The EMA's decay after ``n_averaged`` updates: min(decay, (1 + n) / (10 + n)), so early weights fade quickly."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def ema_average(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor, decay: float) -> None:
    """One EMA step of every tensor in one multi-tensor ``lerp``; the update count is read once per
    step (a GPU host sync), not once per parameter."""
    torch._foreach_lerp_(averaged, current, 1.0 - ema_decay(int(n_averaged), decay))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear learning-rate warm-up from 1/warmup to 1."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


class GeneratorModule(L.LightningModule):
    """Holds the HVAE and its EMA copy; clips the gradient norm and skips NaN or huge updates."""

    def __init__(self, model: HVAE, grad_clip: float, grad_skip: float, ema_decay: float):
        super().__init__()
        self.model = model
        self.grad_clip, self.grad_skip = grad_clip, grad_skip
        self.ema = AveragedModel(model, multi_avg_fn=partial(ema_average, decay=ema_decay))
        self.ema.requires_grad_(False)
        self.register_buffer("skipped", torch.zeros((), dtype=torch.long))

    @property
    def ema_model(self) -> HVAE:
        return self.ema.module

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm = torch.nn.utils.clip_grad_norm_(self.trainable(), self.grad_clip)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        if not math.isfinite(float(norm)) or float(norm) > self.grad_skip:
            self.skipped += 1
            for p in self.trainable():
                p.grad = None
        self.log("train/skipped", self.skipped.float(), on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update_parameters(self.model)


class HVAETrainModule(GeneratorModule):
    """Maximises the beta-ELBO of the training images given their parents."""

    def __init__(self, model: HVAE, beta: float, lr: float, weight_decay: float, warmup_steps: int, **kwargs):
        super().__init__(model, **kwargs)
        self.beta, self.lr, self.weight_decay, self.warmup_steps = beta, lr, weight_decay, warmup_steps

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        terms = elbo_terms(self.model, x, pa, self.beta)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        terms = elbo_terms(self.ema_model, x, pa, self.beta)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.trainable(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_factor, warmup_steps=self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
