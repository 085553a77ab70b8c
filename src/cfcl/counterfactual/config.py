"""Configs of the generator stages: ``cf train``, ``cf finetune``, ``cf generate``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cfcl.config import StrictModel
from cfcl.counterfactual.hvae import HVAEArch
from cfcl.training import TrainerConfig


class OptimConfig(StrictModel):
    """AdamW with linear warm-up; gradients clipped, updates skipped when the norm is NaN or huge."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(350.0, gt=0)
    grad_skip: float = Field(25000.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)


class CFTrainConfig(StrictModel):
    """Train the HVAE image mechanism on the images of ``splits`` of the store ``data``."""

    data: Path
    parents: list[str] = ["domain"]
    splits: list[str] = ["train"]
    val_split: str | None = "val"
    val_images: int = Field(256, ge=0)
    arch: HVAEArch = HVAEArch()
    beta: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=1)
    balanced_sampling: bool = False
    optim: OptimConfig = OptimConfig()
    seed: int = 0
    grid_images: int = Field(8, ge=1)
    trainer: TrainerConfig = TrainerConfig(max_epochs=8)


class CFFinetuneConfig(StrictModel):
    """Counterfactual fine-tuning: frozen encoder, decoder trained so the guide sees the target domain
    in x*, under Lagrangian bounds on the factual negative ELBO (``elbo_bound``, or by default the
    starting model's value on ``bound_batches`` training batches times (1 + ``elbo_tolerance``)) and
    on the round-trip MAE(x, x* taken back to x's parents) (``round_trip_bound``; None: unconstrained)."""

    data: Path
    generator: Path
    guide: Path
    splits: list[str] = ["train"]
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(350.0, gt=0)
    grad_skip: float = Field(25000.0, gt=0)
    ema_decay: float = Field(0.0, ge=0, lt=1)
    elbo_tolerance: float = Field(0.02, ge=0)
    elbo_bound: float | None = None
    bound_batches: int = Field(8, ge=1)
    multiplier_init: float = Field(1.0, ge=0)
    multiplier_lr: float = Field(10.0, ge=0)
    round_trip_bound: float | None = Field(0.015, gt=0)
    round_trip_multiplier_init: float = Field(10.0, ge=0)
    round_trip_multiplier_lr: float = Field(200.0, ge=0)
    seed: int = 0
    grid_images: int = Field(8, ge=1)
    trainer: TrainerConfig = TrainerConfig(max_epochs=1)


class CFGenerateConfig(StrictModel):
    """Write the counterfactual store: every image of ``splits`` x every target domain but its own."""

    data: Path
    generator: Path
    splits: list[str] = ["train"]
    target_domains: list[int] | None = None
    include_ood: bool = False
    batch_size: int = Field(128, ge=1)
    chunk: int = Field(2048, ge=1)
    device: str = "auto"
    progress_bar: bool = True
