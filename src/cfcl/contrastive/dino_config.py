"""Settings of the DINO methods (``pretrain.dino``); defaults suit the synthetic benchmark on a CPU.

The reference settings (docs/architecture.md, "The DINO family") are in the
``pretrain_padchest_dino`` and ``pretrain_embed_dino`` presets.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from cfcl.config import StrictModel


def _ordered(name: str, bounds: tuple[float, float]) -> None:
    if not 0 < bounds[0] <= bounds[1]:
        raise ValueError(f"dino.{name} must be (low, high) with 0 < low <= high, got {bounds}")


class DinoConfig(StrictModel):
    """Crops, head, teacher and extra losses of DINO-v2-style self-distillation."""

    prototypes: int = Field(1024, ge=2, description="output width of the DINO head (65536 in the reference)")
    head_hidden: int = Field(512, ge=1)
    head_bottleneck: int = Field(128, ge=1)
    head_batch_norm: bool = Field(
        True,
        description="BatchNorm in the head's MLP (the DINO code's use_bn_in_head); "
        "without it, small data keeps the teacher uniform",
    )
    global_size: int | None = Field(
        None, ge=1, description="global crop side in pixels; default: the store's image size"
    )
    global_scale: tuple[float, float] = (0.4, 1.0)
    n_local: int = Field(4, ge=0, description="local crops per image (half of them from a counterfactual in cf-dino)")
    local_size: int = Field(32, ge=1)
    local_scale: tuple[float, float] = (0.05, 0.4)
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: tuple[float, float] = Field(
        (0.04, 0.04),
        description="warmed up linearly from the first to the second (reference: 0.04 to 0.07 over 30 epochs)",
    )
    teacher_temp_warmup_epochs: float = Field(2.0, ge=0)
    teacher_momentum: tuple[float, float] = Field((0.995, 1.0), description="EMA momentum, cosine from first to second")
    center_momentum: float = Field(0.9, ge=0, le=1)
    weight_decay: tuple[float, float] = Field(
        (0.04, 0.4),
        description="cosine from first to second, decoupled (AdamW) under either optimizer (replaces weight_decay)",
    )
    warmup_epochs: float = Field(1.0, ge=0, description="linear learning-rate warm-up (replaces warmup_steps)")
    freeze_prototypes_epochs: float = Field(
        1.0,
        ge=0,
        description="the head's last layer (the prototypes) is not updated for this long at the start "
        "(DINO, DINOv2: 1)",
    )
    ibot_weight: float = Field(0.0, ge=0, description="iBOT masked-patch loss weight; needs a ViT encoder")
    mask_ratio: tuple[float, float] = Field(
        (0.1, 0.5), description="share of the patches a masked view masks, in blocks"
    )
    mask_p: float = Field(0.5, ge=0, le=1, description="share of the student's global views that are masked")
    koleo_weight: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DinoConfig:
        for name in ("global_scale", "local_scale", "teacher_temp", "mask_ratio"):
            _ordered(name, getattr(self, name))
        if self.global_size is not None and self.local_size > self.global_size:
            raise ValueError(f"dino.local_size {self.local_size} is larger than dino.global_size {self.global_size}")
        return self
