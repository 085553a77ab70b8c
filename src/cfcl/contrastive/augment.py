"""Batched image augmentations on the training device, with random parameters drawn per sample.

The pipeline (kornia) takes float ``[B, 1, H, W]`` images in [0, 1] already on the device, so
the data loader only moves uint8 rows. Presets: ``chest`` and ``mammo`` hold the reference
study's settings (DESIGN §6), ``demo`` the recipe calibrated with the synthetic benchmark (docs/benchmark.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from kornia import augmentation as K
from pydantic import Field, ValidationError, model_validator

from cfcl.config import StrictModel


class AugmentParams(StrictModel):
    """Resolved augmentation settings; probabilities are per sample, an op with probability 0 is left out."""

    crop_scale: tuple[float, float] = (0.3, 0.99)
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)
    rotation: float = Field(90.0, ge=0, le=180, description="maximum rotation in degrees (both ways)")
    rotation_p: float = Field(1.0, ge=0, le=1)
    hflip_p: float = Field(0.5, ge=0, le=1)
    vflip_p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.4, ge=0, description="torchvision ColorJitter semantics")
    contrast: float = Field(0.4, ge=0, description="torchvision ColorJitter semantics (blend with the mean)")
    color_p: float = Field(0.8, ge=0, le=1)
    gamma: tuple[float, float] = (1.0, 1.0)
    gamma_gain: tuple[float, float] = (1.0, 1.0)
    gamma_p: float = Field(0.0, ge=0, le=1)
    contrast_factor: tuple[float, float] = Field((1.0, 1.0), description="multiplies the image (kornia RandomContrast)")
    contrast_factor_p: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    blur_kernel: int = Field(5, ge=3)
    blur_p: float = Field(0.0, ge=0, le=1)
    sharpness: tuple[float, float] = (0.0, 2.0)
    sharpness_p: float = Field(0.5, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0)
    noise_p: float = Field(0.0, ge=0, le=1)
    erasing_scale: tuple[float, float] = (0.05, 0.30)
    erasing_p: float = Field(0.5, ge=0, le=1)


PRESETS: dict[str, dict] = {
    # DESIGN §6, chest X-ray (PadChest).
    "chest": {},
    # DESIGN §6, mammography (EMBED).
    "mammo": {"crop_scale": (0.3, 0.9), "rotation": 45.0, "erasing_scale": (0.05, 0.10)},
    # Synthetic benchmark (docs/benchmark.md, "Demo augmentations"): mild crops, no flips, no
    # erasing; exam technique (gamma, gain), response curve, PSF, edge enhancement and noise.
    "demo": {
        "crop_scale": (0.6, 1.0), "crop_ratio": (0.85, 1.15), "rotation": 8.0, "rotation_p": 0.5,
        "hflip_p": 0.0, "vflip_p": 0.0, "color_p": 0.0, "gamma": (0.6, 1.6), "gamma_gain": (0.75, 1.25),
        "gamma_p": 0.8, "contrast_factor": (0.6, 1.4), "contrast_factor_p": 0.8, "blur_sigma": (0.1, 1.5),
        "blur_kernel": 5, "blur_p": 0.5, "sharpness": (0.0, 1.0), "sharpness_p": 0.3, "noise_std": 0.04,
        "noise_p": 0.5, "erasing_p": 0.0,
    },
}


class AugmentConfig(StrictModel):
    """A preset plus optional overrides of any of its values (``--set augment.rotation=30``)."""

    preset: Literal["chest", "mammo", "demo"] = "demo"
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] | None = None
    rotation: float | None = None
    rotation_p: float | None = None
    hflip_p: float | None = None
    vflip_p: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    color_p: float | None = None
    gamma: tuple[float, float] | None = None
    gamma_gain: tuple[float, float] | None = None
    gamma_p: float | None = None
    contrast_factor: tuple[float, float] | None = None
    contrast_factor_p: float | None = None
    blur_sigma: tuple[float, float] | None = None
    blur_kernel: int | None = None
    blur_p: float | None = None
    sharpness: tuple[float, float] | None = None
    sharpness_p: float | None = None
    noise_std: float | None = None
    noise_p: float | None = None
    erasing_scale: tuple[float, float] | None = None
    erasing_p: float | None = None

    def resolve(self) -> AugmentParams:
        overrides = {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}
        return AugmentParams(**{**PRESETS[self.preset], **overrides})

    @model_validator(mode="after")
    def _valid_when_resolved(self) -> "AugmentConfig":
        try:
            self.resolve()
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"augment.{first['loc'][0]}: {first['msg']}, got {first.get('input')!r}") from None
        return self


def build_augment(params: AugmentParams, size: tuple[int, int]) -> torch.nn.Module:
    """A module mapping ``[B, 1, H, W]`` in [0, 1] to augmented views of shape ``[B, 1, *size]``."""
    stages = [
        K.RandomResizedCrop(tuple(size), scale=params.crop_scale, ratio=params.crop_ratio),
        K.RandomRotation(params.rotation, p=params.rotation_p),
        K.RandomHorizontalFlip(p=params.hflip_p),
        K.RandomVerticalFlip(p=params.vflip_p),
        K.ColorJiggle(brightness=params.brightness, contrast=params.contrast, p=params.color_p),
        K.RandomGamma(gamma=params.gamma, gain=params.gamma_gain, p=params.gamma_p),
        K.RandomContrast(contrast=params.contrast_factor, p=params.contrast_factor_p),
        K.RandomGaussianBlur((params.blur_kernel, params.blur_kernel), params.blur_sigma, p=params.blur_p),
        K.RandomSharpness(params.sharpness, p=params.sharpness_p),
        K.RandomGaussianNoise(std=params.noise_std, p=params.noise_p),
        K.RandomErasing(scale=params.erasing_scale, p=params.erasing_p),
    ]
    return torch.nn.Sequential(*(s for s in stages if s.p > 0))
