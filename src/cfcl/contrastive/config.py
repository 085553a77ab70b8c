"""Config of ``cfcl pretrain``: one contrastive pretraining run (method x seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from cfcl.config import StrictModel
from cfcl.contrastive.augment import AugmentConfig
from cfcl.contrastive.dino_config import DinoConfig
from cfcl.contrastive.encoders import ARCHS
from cfcl.contrastive.methods import METHODS, cf_store_help, names
from cfcl.contrastive.timm_encoders import is_timm_arch, timm_name
from cfcl.contrastive.vit import VIT_ARCHS, vit_kwargs
from cfcl.errors import ConfigError
from cfcl.training import TrainerConfig


class EncoderConfig(StrictModel):
    """Architecture (``cfcl.contrastive.encoders.ARCHS`` or ``timm/<name>``) and its pretrained weights."""

    arch: str = Field("small", description=f"one of {', '.join(ARCHS)}, or timm/<name> for any timm model")
    arch_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "the architecture's arguments (timm: create_model's, e.g. img_size); unset for `small`: width 16, blocks "
            "[1, 1, 1, 1], stem stride 2"
        ),
    )
    pretrained_weights: Path | None = Field(
        None,
        description=(
            "a state_dict file; torchvision ResNets: also a torchvision weight name (IMAGENET1K_V1); timm: also a "
            "pretrained tag or hf-hub:<org>/<repo>"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _small_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "arch_kwargs" not in data and data.get("arch", "small") == "small":
            return {**data, "arch_kwargs": {"width": 16, "blocks": [1, 1, 1, 1], "stem_stride": 2}}
        return data

    @model_validator(mode="after")
    def _valid_arch(self) -> EncoderConfig:
        if is_timm_arch(self.arch):
            timm_name(self.arch)
        elif self.arch not in ARCHS:
            raise ConfigError(f"encoder.arch {self.arch!r} is not one of {', '.join(ARCHS)}, or timm/<name>")
        if self.arch in VIT_ARCHS:
            vit_kwargs(self.arch, self.arch_kwargs)
        return self


class PretrainConfig(StrictModel):
    """SimCLR- or DINO-family pretraining on the ``split`` images of ``data``; defaults suit the synthetic demo on a
    CPU."""

    method: Literal[tuple(METHODS)] = "simclr"
    data: Path
    cf_store: Path | None = Field(None, description=cf_store_help())
    split: str = "train"
    encoder: EncoderConfig = EncoderConfig()
    projection: list[int] = Field([128, 64], min_length=1, description="hidden widths then output width")
    temperature: float = Field(0.1, gt=0)
    batch_size: int = Field(128, ge=2)
    p_replace: float = Field(
        0.5,
        ge=0,
        le=1,
        description=f"{names(lambda m: m.views == 'replace')}: probability of replacing the image by a counterfactual",
    )
    p_cf: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "methods with paired or multi views: probability a further view is a counterfactual (DINO family: the "
            "second global view)"
        ),
    )
    n_cf_views: int | None = Field(
        None,
        ge=1,
        description=(
            "counterfactual views per image: default 1 (paired views), every other domain "
            f"({names(lambda m: m.multi_positive)}; {names(lambda m: m.multi_positive and not m.uses_counterfactuals)} "
            "takes as many further views of the image itself)"
        ),
    )
    augment: AugmentConfig = AugmentConfig()
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        "constant", description="constant as the reference; a cosine decay starves short runs (docs/history.md)"
    )
    online_probe: bool = Field(True, description="detached linear probe on the label, for monitoring only")
    channels_last: bool = False
    compile: bool = Field(
        False, description="torch.compile the encoder (worth it on a GPU for long runs; compiling takes minutes)"
    )
    stop_skipped_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "stop when an epoch skipped at least this fraction of its updates for non-finite gradients (1: only an "
            "epoch without any update)"
        ),
    )
    seed: int = 0
    resume: Literal["auto", "require", "never"] = Field(
        "auto",
        description=(
            "auto: continue an unfinished run of this config in OUT; require: fail if there is none; never: start "
            "afresh"
        ),
    )
    trainer: TrainerConfig = TrainerConfig(max_epochs=10)
    dino: DinoConfig | None = Field(
        None, description="settings of the DINO methods (defaults if not given); dropped for the SimCLR family"
    )

    @model_validator(mode="before")
    @classmethod
    def _dino_settings(cls, values: Any) -> Any:
        """One run section serves both families: DINO settings exist exactly for the DINO methods."""
        if isinstance(values, dict):
            method = values.get("method")
            dino = isinstance(method, str) and method in METHODS and METHODS[method].family == "dino"
            values = {**values, "dino": (values.get("dino") or {}) if dino else None}
        return values

    @model_validator(mode="after")
    def _ibot_needs_vit(self) -> PretrainConfig:
        if self.dino is not None and self.dino.ibot_weight > 0 and self.encoder.arch not in VIT_ARCHS:
            raise ValueError(
                f"dino.ibot_weight needs a ViT encoder ({', '.join(VIT_ARCHS)}), encoder.arch is {self.encoder.arch!r}"
            )
        return self
