"""Configs of the counterfactual stages, one per stage: ``cf train``, ``cf classifier``, ``cf finetune``,
``cf generate`` and ``cf evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator

from cfcl.config import StrictModel
from cfcl.counterfactual.generator.hvae import HVAEArch
from cfcl.training import DevicesConfig, TrainerConfig


def _distinct(cls, value: list[str]) -> list[str]:
    """The intervened parents, each once."""
    if len(set(value)) != len(value):
        raise ValueError(f"lists a parent twice: {value}")
    return value


class OptimConfig(StrictModel):
    """AdamW with linear warm-up; gradients clipped, updates skipped when the norm is NaN or huge."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(350.0, gt=0)
    grad_skip: float = Field(25000.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    implementation: Literal["default", "foreach", "fused"] = Field(
        "default",
        description="AdamW's kernels: default (PyTorch's choice), foreach, or fused (one kernel for all tensors, "
        "and skipped updates decided on the device with no host read each step: the choice on a GPU)",
    )
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none",
        description="scale lr and warm-up from reference_batch to batch_size: lr x k or x sqrt(k), k = batch_size / "
        "reference_batch, warm-up over the same number of images "
        "(cfcl.counterfactual.generator.module.scaled_lr_and_warmup)",
    )
    reference_batch: PositiveInt = Field(
        32, description="the batch size lr and warmup_steps are set for (with lr_scaling)"
    )


class GeneratorTrainerConfig(TrainerConfig):
    """The trainer settings, and how the HVAE runs: compiled, channels-last."""

    compile: bool = Field(
        False,
        description="torch.compile the HVAE's training ELBO (worth it on a GPU for long runs; compiling takes minutes)",
    )
    channels_last: bool = Field(
        False, description="the HVAE's weights and activations in channels-last layout (faster convolutions on a GPU)"
    )


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
    trainer: GeneratorTrainerConfig = GeneratorTrainerConfig(max_epochs=8)


def _one_or_several(cls, value: Path | list[Path]) -> Path | list[Path]:
    """A list of one guide is that guide, so its config dumps (and hashes) as a single path."""
    if isinstance(value, list) and not value:
        raise ValueError("lists no guide")
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


class CFFinetuneConfig(StrictModel):
    """Counterfactual fine-tuning: frozen encoder, decoder trained so that each guide sees the target value
    of its parent in x* of that parent alone intervened on (the mean of their cross-entropies), under
    Lagrangian bounds on the factual negative ELBO (``elbo_bound``, or by default the starting model's
    value on ``bound_batches`` training batches times (1 + ``elbo_tolerance``)) and on the round-trip
    MAE(x, x* taken back to x's parents), averaged over the guided parents (``round_trip_bound``; None:
    unconstrained)."""

    data: Path
    generator: Path
    guide: Path | list[Path] = Field(
        description="the guide classifier (folder or file) of each guided parent: one (the scanner's), or a list with "
        "one guide of each parent to guide, e.g. [cf_guide, cf_guide_sex]",
    )
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

    _one_or_several_guides = field_validator("guide")(_one_or_several)


class CFGenerateConfig(StrictModel):
    """Write the counterfactual store: every image of ``splits`` x every combination of target values
    of the ``intervene`` parents but its own (docs/architecture.md, "Intervened parents"); with
    ``source``, that store's rows for the same pairs, reconstructed by the generator instead."""

    # the processes that share the chunks, and whether a progress bar shows, do not change the store
    unhashed = frozenset({"trainer", "progress_bar"})

    data: Path
    generator: Path
    intervene: list[str] = Field(
        default_factory=lambda: ["domain"],
        min_length=1,
        description="discrete parents of the generator to intervene on, jointly: "
        "[domain] (the scanner), [sex], [domain, sex]",
    )
    source: Path | None = Field(
        None,
        description="a counterfactual store of data (e.g. DATA/true_cf) to reconstruct instead of generating: its rows "
        "for the same (image, target) pairs, each image abducted with its own parents and decoded under them "
        "without its "
        "pixel noise (the method oracle-recon's store)",
    )
    splits: list[str] = ["train"]
    target_domains: list[int] | None = None
    include_ood: bool = False
    batch_size: int = Field(128, ge=1)
    chunk: int = Field(2048, ge=1)
    device: str = Field("auto", description="auto: each rank's own CUDA GPU when there is one, else the CPU")
    progress_bar: bool = True
    trainer: DevicesConfig = Field(
        DevicesConfig(),
        description="processes to split the generation over (devices x num_nodes); under cfcl run, the run's",
    )

    _distinct_parents = field_validator("intervene")(_distinct)


class QualityTargets(StrictModel):
    """Pass marks of counterfactual quality (docs/architecture.md, "Counterfactual quality")."""

    effectiveness: float = Field(0.95, ge=0, le=1)
    mae_ratio: float = Field(0.5, gt=0)
    reversibility: float = Field(0.02, gt=0)


class QualityConfig(StrictModel):
    """``cfcl cf evaluate``: the quality of a generator's counterfactuals of ``data`` on the ``intervene``
    parents (as ``cf generate``), judged by ``judge``: one classifier of each intervened parent."""

    data: Path | None = None
    generator: Path | None = None
    judge: Path | list[Path] | None = Field(
        None, description="the judge of each intervened parent: one classifier folder, or a list (one per parent)"
    )
    intervene: list[str] = Field(
        default_factory=lambda: ["domain"],
        min_length=1,
        description="discrete parents to intervene on, jointly: [domain] (the scanner), [sex], [domain, sex]",
    )
    splits: list[str] = Field(default_factory=lambda: ["test"])
    n_per_domain: int = Field(32, ge=1)
    include_ood: bool = False
    null_steps: int = Field(10, ge=1)
    true_cf: Literal["auto", "none"] | Path = "auto"
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    grid_per_domain: int = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    targets: QualityTargets = Field(default_factory=QualityTargets)

    _distinct_parents = field_validator("intervene")(_distinct)


class JitterConfig(StrictModel):
    """Random affine jitter; no intensity changes, which would blur the scanner signal."""

    p: float = Field(0.8, ge=0, le=1)
    degrees: float = Field(5.0, ge=0)
    translate: float = Field(0.05, ge=0, le=0.5)
    scale: float = Field(0.05, ge=0, lt=1)


class ClassifierConfig(StrictModel):
    """``cfcl cf classifier``: a classifier of the discrete ``parent`` (the scanner by default) trained on
    the real images of ``data``, as guide or judge."""

    data: Path | None = None
    role: Literal["guide", "judge"] = "guide"
    parent: str = Field("domain", description="the discrete parent classified: domain (the scanner), sex...")
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
    augment: JitterConfig | None = Field(default_factory=JitterConfig)
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(max_epochs=15))
