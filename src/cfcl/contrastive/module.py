"""The Lightning module of contrastive pretraining: augment on the device, encode, project, NT-Xent."""

from __future__ import annotations

import math
from collections.abc import Iterable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from cfcl.contrastive.losses import nt_xent
from cfcl.errors import CfclError


class NonFiniteLossError(CfclError):
    """Too many updates of an epoch were skipped for non-finite gradients; the last good checkpoint is kept."""


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, cosine: bool) -> float:
    """Learning-rate factor: linear warm-up to 1, then a cosine decay to 0 at ``total_steps`` (or constant)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def non_finite_gradients(parameters: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """1.0 on ``device`` if any gradient holds a NaN or an infinity, else 0.0, without a host read.

    The loss scaler's fused check (one kernel per device and dtype over every gradient, multiplying
    each by 1, which leaves it unchanged); fused Adam/AdamW skip their update, step count included,
    when this is their ``found_inf``.
    """
    found = torch.zeros((), dtype=torch.float32, device=device)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for (where, _), grads in groups.items():
        found_here = found if where == device else torch.zeros((), dtype=torch.float32, device=where)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_here, torch.ones((), device=where))
        if found_here is not found:
            found = torch.maximum(found, found_here.to(device))
    return found


def online_probe_loss(module: L.LightningModule, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of ``module.probe`` on the detached features of the batch's first views
    (0 without a probe), with its loss and accuracy logged: it monitors, it never shapes the encoder."""
    if module.probe is None:
        return torch.zeros((), device=features.device)
    n = len(labels)
    logits = module.probe(features[:n].detach().float())
    probe_loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(1) == labels).float().mean()
    module.log("probe/loss", probe_loss, on_step=False, on_epoch=True, batch_size=n)
    module.log("probe/accuracy", accuracy, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
    return probe_loss


class NonFiniteGuard(L.LightningModule):
    """Skips a step whose gradients are not finite on the device, as a loss scaler does (no host
    read per step): the fused optimiser sees ``found_inf``. Skipped updates are counted on the
    device and read once per epoch; an epoch that skipped at least ``stop_skipped_fraction`` of its
    updates stops the run. Subclasses call ``super().__init__(stop_skipped_fraction)`` and build
    a fused Adam/AdamW, which honours ``found_inf``.
    """

    def __init__(self, stop_skipped_fraction: float = 1.0):
        super().__init__()
        self.stop_skipped_fraction = stop_skipped_fraction
        self.register_buffer("skipped_updates", torch.zeros(()), persistent=False)
        self.epoch_updates = 0

    def on_train_epoch_start(self) -> None:
        self.skipped_updates.zero_()
        self.epoch_updates = 0

    def on_before_optimizer_step(self, optimizer) -> None:
        # 16-mixed precision: the loss scaler checks and skips by itself (and sets found_inf).
        if self.trainer.precision == "16-mixed":
            return
        found_inf = non_finite_gradients(self.parameters(), self.skipped_updates.device)
        optimizer.found_inf = found_inf
        self.skipped_updates += found_inf
        self.epoch_updates += 1

    def on_train_epoch_end(self) -> None:
        if self.epoch_updates == 0:
            return
        skipped = int(self.skipped_updates.item())  # the only host read of the guard: once per epoch
        self.log("train/skipped_updates", float(skipped), on_step=False, on_epoch=True)
        if skipped >= self.stop_skipped_fraction * self.epoch_updates:
            raise NonFiniteLossError(
                f"pretraining skipped {skipped} of {self.epoch_updates} updates of epoch {self.current_epoch} for "
                f"non-finite gradients (stop_skipped_fraction={self.stop_skipped_fraction}); stopped at step "
                f"{self.global_step}, the last good checkpoint is kept"
            )


class ContrastiveModule(NonFiniteGuard):
    """Thin wrapper: the maths is in :func:`nt_xent`, the views in :mod:`cfcl.contrastive.pairing`.

    Augmentation draws come from a generator seeded by (seed, global step, rank), so every step
    is reproducible and a resumed run continues exactly. The optional online probe sees detached
    features only: it monitors, it never shapes the encoder. Non-finite steps: :class:`NonFiniteGuard`.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        head: torch.nn.Module,
        augment: torch.nn.Module,
        *,
        temperature: float,
        optimizer: str,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        cosine: bool,
        seed: int,
        n_classes: int | None = None,
        channels_last: bool = False,
        stop_skipped_fraction: float = 1.0,
    ):
        super().__init__(stop_skipped_fraction)
        self.encoder, self.head, self.augment = encoder, head, augment
        self.probe = torch.nn.Linear(encoder.feature_dim, n_classes) if n_classes else None
        self.temperature, self.seed, self.channels_last = temperature, seed, channels_last
        self.optim = dict(name=optimizer, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, cosine=cosine)

    def _augmented(self, views: torch.Tensor) -> torch.Tensor:
        x = views.float().div_(255.0)
        step_seed = int(np.random.SeedSequence([self.seed, self.global_step, self.global_rank]).generate_state(1)[0])
        on_cuda = x.device.type == "cuda"
        with torch.random.fork_rng(devices=[x.device] if on_cuda else []), torch.autocast(x.device.type, enabled=False):
            torch.manual_seed(step_seed)
            x = self.augment(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        features = self.encoder(self._augmented(batch["views"]))
        loss = nt_xent(self.head(features), batch["groups"], self.temperature)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(features))
        return loss + online_probe_loss(self, features, batch["labels"])

    def configure_optimizers(self):
        cfg = self.optim
        params = [p for p in self.parameters() if p.requires_grad]
        make = torch.optim.AdamW if cfg["name"] == "adamw" else torch.optim.Adam
        optimizer = make(
            params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=True
        )  # one kernel for all tensors
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, cfg["warmup_steps"], total, cfg["cosine"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
