"""Thin Lightning modules around the HVAE: EMA weights, clipping with update skipping, ELBO training."""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import lightning as L
import torch
from torch.nn.utils import clip_grad_norm_
from torch.optim.swa_utils import AveragedModel

from cfcl.counterfactual.data import split_batch
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.losses import elbo_terms


def ema_decay(n_averaged: int, decay: float) -> float:
    """The EMA's decay after ``n_averaged`` updates: min(decay, (1 + n) / (10 + n)), so early weights fade quickly."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def ema_average(
    averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor, decay: float
) -> None:
    """One EMA step of every tensor in one multi-tensor ``lerp``; the update count is read once per
    step (a GPU host sync), not once per parameter."""
    torch._foreach_lerp_(averaged, current, 1.0 - ema_decay(int(n_averaged), decay))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear learning-rate warm-up from 1/warmup to 1."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


LrScaling = Literal["none", "linear", "sqrt"]


def scaled_lr_and_warmup(
    lr: float, warmup_steps: int, batch_size: int, reference_batch: int, rule: LrScaling
) -> tuple[float, int]:
    """The learning rate and warm-up steps for ``batch_size`` from those set for ``reference_batch``.

    ``linear``: lr x k, ``sqrt``: lr x sqrt(k) (the rule for Adam-type optimisers), with k = batch_size /
    reference_batch; both warm up over the same number of images, ceil(warmup_steps / k) steps (at least
    one where there was a warm-up). ``none``: both unchanged.
    """
    if rule == "none":
        return lr, warmup_steps
    k = batch_size / reference_batch
    warmup = max(1, math.ceil(warmup_steps / k)) if warmup_steps > 0 else 0
    return lr * (k if rule == "linear" else math.sqrt(k)), warmup


def skipped_update(norm: torch.Tensor, grad_skip: float) -> torch.Tensor:
    """1.0 where the update of this gradient norm is skipped (NaN, infinite or above ``grad_skip``), else
    0.0: a tensor on the norm's device, decided without a host read (NaN compares false). The norm is
    compared with ``grad_skip`` rounded down to the norm's precision, which decides as ``float(norm) >
    grad_skip`` does."""
    limit = torch.tensor(grad_skip, dtype=torch.float64).to(norm.dtype)
    if limit.item() > grad_skip:
        limit = torch.nextafter(limit, torch.tensor(-math.inf, dtype=norm.dtype))
    return (norm <= limit.item()).logical_not().float()


def adamw(
    parameters: list[torch.nn.Parameter], lr: float, weight_decay: float, implementation: str
) -> torch.optim.AdamW:
    """AdamW as ``optim.implementation`` says: ``default`` (PyTorch's choice: foreach on CUDA, one tensor
    at a time on CPU), ``foreach`` or ``fused`` (one kernel for all tensors; it honours ``found_inf``,
    so skipped updates need no host read). Every accelerator cfcl trains on (CPU, CUDA, MPS) has the
    fused kernel."""
    kernels = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[implementation]
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, **kernels)


class GeneratorModule(L.LightningModule):
    """Holds the HVAE and its EMA copy; clips the gradient norm and skips NaN or huge updates.

    The skip is decided on the device (:func:`skipped_update`) and counted there (``skipped``). A fused
    AdamW skips on that flag itself (``found_inf``, as the contrastive modules' non-finite guard does and
    as the loss scaler does), with no host read; any other optimiser, and fp16 whose loss scaler sets
    ``found_inf`` itself, drop the gradients instead, which needs the flag on the host.
    """

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

    def clip_and_skip(self, optimizer: torch.optim.Optimizer, precision: str) -> torch.Tensor:
        """Clips the gradients to ``grad_clip``, skips this update if :func:`skipped_update` says so and
        returns the gradient norm (before clipping)."""
        norm = clip_grad_norm_(self.trainable(), self.grad_clip)
        skip = skipped_update(norm, self.grad_skip)
        self.skipped += skip.long()
        if optimizer.defaults.get("fused") and precision != "16-mixed":
            optimizer.found_inf = skip
        elif skip.item():
            for p in self.trainable():
                p.grad = None
        return norm

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm = self.clip_and_skip(optimizer, self.trainer.precision)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self.log("train/skipped", self.skipped.float(), on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update_parameters(self.model)


class HVAETrainModule(GeneratorModule):
    """Maximises the beta-ELBO of the training images given their parents; with ``compile`` the training
    ELBO (forward of the HVAE and the loss) is ``torch.compile``d (the weights and their names do not change)."""

    def __init__(
        self,
        model: HVAE,
        beta: float,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        implementation: str = "default",
        compile: bool = False,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        self.beta, self.lr, self.weight_decay, self.warmup_steps = beta, lr, weight_decay, warmup_steps
        self.implementation = implementation
        self.training_elbo = torch.compile(elbo_terms) if compile else elbo_terms

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        terms = self.training_elbo(self.model, x, pa, self.beta)
        self.log_dict(
            {f"train/{k}": v for k, v in terms.items()}, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x)
        )
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        terms = elbo_terms(self.ema_model, x, pa, self.beta)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self):
        optimizer = adamw(self.trainable(), self.lr, self.weight_decay, self.implementation)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_factor, warmup_steps=self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
