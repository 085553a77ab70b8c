"""The Lightning module of DINO-v2-style self-distillation (``dino``, ``dino+``, ``cf-dino``, ``oracle-dino``).

Which view comes from which image (real or counterfactual) is decided by
:func:`cfcl.contrastive.pairing.plan_views`, as for the SimCLR family; this module augments the
two global views and the local crops, runs student and EMA teacher, and adds the losses of
:mod:`cfcl.contrastive.dino_losses`. The teacher is never touched by gradients: its parameters
are frozen and outside the optimiser, and it moves only by :func:`ema_update` after each
optimiser step. Teacher and centres are module state, saved in every checkpoint, and the
schedules are functions of the global step, so a resumed run continues exactly.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import torch
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import random_block_mask
from lightly.utils.scheduler import cosine_schedule

from cfcl.contrastive.augment import AugmentParams, build_augment
from cfcl.contrastive.dino_config import DinoConfig
from cfcl.contrastive.dino_losses import (
    dino_loss,
    ema_update,
    ibot_loss,
    koleo_loss,
    linear_warmup,
    masked_patches,
    target_entropies,
    updated_center,
)
from cfcl.contrastive.encoders import Encoder
from cfcl.contrastive.module import NonFiniteGuard, online_probe_loss, warmup_cosine


def block_masks(n: int, grid: tuple[int, int], ratio: tuple[float, float], p: float, seed: int) -> torch.Tensor:
    """``[n, patches]`` iBOT masks as DINOv2 draws them (lightly's ``random_block_mask``): a share
    ``p`` of the images masks rectangles of patches covering a ``ratio`` share, spread over the
    masked images, the rest none. Drawn on the CPU from ``seed`` alone, so a resumed run draws the
    same masks; the caller's Python random state is left as it was."""
    patches = grid[0] * grid[1]
    low = max(ratio[0], 1 / patches)  # a masked view masks at least one patch, even on a tiny grid
    smallest_block = max(1, min(4, int(patches * low)))  # DINOv2's 4, fewer where a view masks fewer
    state = random.getstate()
    random.seed(seed)
    try:
        masks = random_block_mask(
            (n, *grid),
            batch_mask_ratio=p,
            min_image_mask_ratio=low,
            max_image_mask_ratio=max(low, ratio[1]),
            min_num_masks_per_block=smallest_block,
        )
    finally:
        random.setstate(state)
    return masks.flatten(1)


def projection_head(feature_dim: int, dino: DinoConfig) -> DINOProjectionHead:
    """lightly's DINO head of ``dino``'s sizes. lightly builds its weight-normalised last layer with a torch API
    that warns of its deprecation, which the user cannot act on: silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated", category=FutureWarning
        )
        return DINOProjectionHead(
            feature_dim, dino.head_hidden, dino.head_bottleneck, dino.prototypes, dino.head_batch_norm
        )


class DinoModule(NonFiniteGuard):
    """Student encoder + DINO head trained against an EMA teacher; the saved encoder is the teacher's."""

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        dino: DinoConfig,
        augment: AugmentParams,
        global_size: tuple[int, int],
        *,
        lr: float,
        cosine: bool,
        steps_per_epoch: int,
        seed: int,
        n_classes: int | None = None,
        stop_skipped_fraction: float = 1.0,
    ):
        super().__init__(stop_skipped_fraction)
        self.encoder: Encoder = make_encoder()
        self.teacher_encoder: Encoder = make_encoder()
        dim = self.encoder.feature_dim
        self.head, self.teacher_head = projection_head(dim, dino), projection_head(dim, dino)
        for student, teacher in ((self.encoder, self.teacher_encoder), (self.head, self.teacher_head)):
            teacher.load_state_dict(student.state_dict())
            teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(dino.prototypes))
        self.register_buffer("patch_center", torch.zeros(dino.prototypes))
        self.global_augment = build_augment(augment.model_copy(update={"crop_scale": dino.global_scale}), global_size)
        local = (dino.local_size, dino.local_size)
        self.local_augment = build_augment(augment.model_copy(update={"crop_scale": dino.local_scale}), local)
        self.probe = torch.nn.Linear(dim, n_classes) if n_classes else None
        self.dino, self.seed, self.steps_per_epoch = dino, seed, steps_per_epoch
        self.optim = dict(lr=lr, cosine=cosine)

    def teacher_temperature(self, step: int) -> float:
        start, end = self.dino.teacher_temp
        return linear_warmup(step, round(self.dino.teacher_temp_warmup_epochs * self.steps_per_epoch), start, end)

    def _schedule(self, step: int, bounds: tuple[float, float]) -> float:
        return float(cosine_schedule(step, int(self.trainer.estimated_stepping_batches), bounds[0], bounds[1]))

    def _views(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Augmented global views ``[2B, ...]``, local crops ``[n_local * B, ...]`` and the student's
        patch masks with :func:`masked_patches` (mask, index, weights), all on the device."""
        x = views.float().div_(255.0)
        n_global = 2 * (len(x) // (2 + self.dino.n_local))
        step_seed = int(np.random.SeedSequence([self.seed, self.global_step, self.global_rank]).generate_state(1)[0])
        on_cuda = x.device.type == "cuda"
        with torch.random.fork_rng(devices=[x.device] if on_cuda else []), torch.autocast(x.device.type, enabled=False):
            torch.manual_seed(step_seed)
            globals_ = self.global_augment(x[:n_global])
            locals_ = self.local_augment(x[n_global:]) if self.dino.n_local else x[:0]
            masks = None
            if self.dino.ibot_weight > 0:
                patch = self.encoder.backbone.patch_size
                grid = (globals_.shape[-2] // patch, globals_.shape[-1] // patch)
                mask = block_masks(n_global, grid, self.dino.mask_ratio, self.dino.mask_p, step_seed)
                masks = tuple(t.to(x.device, non_blocking=True) for t in (mask, *masked_patches(mask)))
        return globals_, locals_, masks

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        globals_, locals_, masks = self._views(batch["views"])
        n_global, k = len(globals_), self.dino.prototypes
        b = n_global // 2
        t_temp, s_temp = self.teacher_temperature(self.global_step), self.dino.student_temp
        with torch.no_grad():
            if masks is None:
                t_features = self.teacher_encoder(globals_)
            else:
                mask, index, weights = masks
                t_tokens = self.teacher_encoder.tokens(globals_)
                t_features = t_tokens[:, 0]
                t_patches = self.teacher_head(t_tokens[:, 1:].flatten(0, 1)[index])
            t_logits = self.teacher_head(t_features).view(2, b, k)
        if masks is None:
            s_features = self.encoder(globals_)
        else:
            s_tokens = self.encoder.tokens(globals_, mask)
            s_features = s_tokens[:, 0]
        s_logits = [self.head(s_features)]
        if len(locals_):
            s_logits.append(self.head(self.encoder(locals_)))
        s_logits = torch.cat(s_logits).view(-1, b, k)
        loss = dino_loss(t_logits, s_logits, self.center, t_temp, s_temp)
        self.log("train/dino", loss, on_step=True, on_epoch=True, batch_size=b)
        if masks is not None:
            s_patches = self.head(s_tokens[:, 1:].flatten(0, 1)[index])
            ibot = ibot_loss(t_patches, s_patches, weights, self.patch_center, t_temp, s_temp)
            self.log("train/ibot", ibot, on_step=True, on_epoch=True, batch_size=b)
            loss = loss + self.dino.ibot_weight * ibot
            self.patch_center = updated_center(self.patch_center, t_patches, self.dino.center_momentum)
        if self.dino.koleo_weight > 0:
            koleo = sum(koleo_loss(view) for view in s_features.view(2, b, -1)) / 2
            self.log("train/koleo", koleo, on_step=True, on_epoch=True, batch_size=b)
            loss = loss + self.dino.koleo_weight * koleo
        target, mean_target = target_entropies(t_logits, self.center, t_temp)
        self.log("train/teacher_entropy", target, on_step=False, on_epoch=True, batch_size=b)
        self.log("train/teacher_mean_entropy", mean_target, on_step=False, on_epoch=True, batch_size=b)
        self.center = updated_center(self.center, t_logits, self.dino.center_momentum)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=b)
        return loss + online_probe_loss(self, s_features, batch["labels"])

    def on_before_optimizer_step(self, optimizer) -> None:
        """As DINO and DINOv2: the prototypes (the head's last layer) keep their drawn directions
        for the first steps, which the DINO authors found steadies the start of training."""
        if self.global_step < round(self.dino.freeze_prototypes_epochs * self.steps_per_epoch):
            for param in self.head.last_layer.parameters():
                param.grad = None
        super().on_before_optimizer_step(optimizer)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Weight decay of this step, the update, then the teacher's EMA step (before any checkpoint of this step)."""
        step = self.global_step
        decay = self._schedule(step, self.dino.weight_decay)
        for group in optimizer.param_groups:
            group["weight_decay"] = decay if group["decayed"] else 0.0
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        momentum = self._schedule(step, self.dino.teacher_momentum)
        ema_update(self.teacher_encoder, self.encoder, momentum)
        ema_update(self.teacher_head, self.head, momentum)

    def configure_optimizers(self):
        """AdamW under either optimizer name: DINO's weight-decay schedule is decoupled decay. As
        coupled L2 through Adam it is divided by the gradients' scale, which is small in
        self-distillation, and it shrank the convolutions until the loss returned to uniform.
        As DINO, biases and normalisation weights are not decayed; nor is the online probe,
        which only monitors."""
        cfg = self.optim
        probe = {id(p) for p in self.probe.parameters()} if self.probe is not None else set()
        trainable = [p for p in self.parameters() if p.requires_grad]
        decayed = [p.ndim > 1 and id(p) not in probe for p in trainable]
        groups = [
            {"params": [p for p, d in zip(trainable, decayed) if d], "decayed": True},
            {"params": [p for p, d in zip(trainable, decayed) if not d], "decayed": False},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=0.0, fused=True)  # fused: honours found_inf
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.dino.warmup_epochs * self.steps_per_epoch)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, cfg["cosine"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
