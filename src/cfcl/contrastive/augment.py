"""Batched image augmentations on the training device, with random parameters drawn per sample.

The pipeline takes float ``[B, 1, H, W]`` images in [0, 1] already on the device, so the data
loader only moves uint8 rows. Each op keeps the semantics of the kornia (torchvision for
brightness/contrast) op it replaces, in fewer whole-batch passes: see :mod:`.geometry` and
:mod:`.intensity`. Presets: ``chest`` and ``mammo`` hold the reference study's settings
(docs/architecture.md, "Reference settings"), ``demo`` standard views for the synthetic
benchmark, ``acquisition`` those plus imitations of its scanners (an ablation; docs/benchmark.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationError, field_validator, model_validator

from cfcl.config import StrictModel
from cfcl.contrastive.geometry import sample_crop_boxes, view_maps, warp_views
from cfcl.contrastive.intensity import (
    add_noise,
    brightness_contrast,
    erase,
    gamma_gain,
    gaussian_blur,
    gaussian_kernels,
    sample_erase_boxes,
    scale_contrast,
    sharpen,
)


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
    blur_kernel: int = Field(5, ge=3, description="odd kernel size")
    blur_p: float = Field(0.0, ge=0, le=1)
    sharpness: tuple[float, float] = (0.0, 2.0)
    sharpness_p: float = Field(0.5, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0)
    noise_p: float = Field(0.0, ge=0, le=1)
    erasing_scale: tuple[float, float] = (0.05, 0.30)
    erasing_p: float = Field(0.5, ge=0, le=1)

    @field_validator("blur_kernel")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError("the blur kernel size must be odd")
        return size


PRESETS: dict[str, dict] = {
    # Reference settings, chest X-ray (PadChest).
    "chest": {},
    # Reference settings, mammography (EMBED).
    "mammo": {"crop_scale": (0.3, 0.9), "rotation": 45.0, "erasing_scale": (0.05, 0.10)},
    # Synthetic benchmark (docs/benchmark.md, "Demo augmentations"): standard SimCLR views at
    # 64 px (mild crops and rotations, brightness/contrast, sharpness; no flips, no erasing) and
    # nothing that imitates a scanner, as on real data.
    "demo": {
        "crop_scale": (0.6, 1.0),
        "crop_ratio": (0.85, 1.15),
        "rotation": 8.0,
        "rotation_p": 0.5,
        "hflip_p": 0.0,
        "vflip_p": 0.0,
        "color_p": 0.8,
        "brightness": 0.4,
        "contrast": 0.4,
        "sharpness": (0.0, 1.0),
        "sharpness_p": 0.3,
        "erasing_p": 0.0,
    },
    # "demo" plus the synthetic scanners' own mechanisms (exam technique, response curve, PSF,
    # edge enhancement, noise): an ablation; these views already make SimCLR scanner-invariant
    # on the benchmark, leaving counterfactuals nothing to add (docs/results.md).
    "acquisition": {
        "crop_scale": (0.6, 1.0),
        "crop_ratio": (0.85, 1.15),
        "rotation": 8.0,
        "rotation_p": 0.5,
        "hflip_p": 0.0,
        "vflip_p": 0.0,
        "color_p": 0.0,
        "gamma": (0.6, 1.6),
        "gamma_gain": (0.75, 1.25),
        "gamma_p": 0.8,
        "contrast_factor": (0.6, 1.4),
        "contrast_factor_p": 0.8,
        "blur_sigma": (0.1, 1.5),
        "blur_kernel": 5,
        "blur_p": 0.5,
        "sharpness": (0.0, 1.0),
        "sharpness_p": 0.3,
        "noise_std": 0.04,
        "noise_p": 0.5,
        "erasing_p": 0.0,
    },
}


class AugmentConfig(StrictModel):
    """A preset plus optional overrides of any of its values (``--set augment.rotation=30``)."""

    preset: Literal["chest", "mammo", "demo", "acquisition"] = "demo"
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
    def _valid_when_resolved(self) -> AugmentConfig:
        try:
            self.resolve()
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"augment.{first['loc'][0]}: {first['msg']}, got {first.get('input')!r}") from None
        return self


class BatchAugment(torch.nn.Module):
    """Augmented views ``[B, 1, *size]`` of ``[B, 1, H, W]`` images in [0, 1], parameters drawn per sample.

    The ops run in the order of :attr:`ops`; one with probability 0 is left out. Crop, rotation
    and flips are one resampling (:mod:`cfcl.contrastive.geometry`); the intensity ops
    (:mod:`cfcl.contrastive.intensity`) run on the whole batch with neutral parameters for the
    samples whose op was not drawn. Draws use the device's default generator, so a
    ``torch.manual_seed`` before the call fixes the views.
    """

    def __init__(self, params: AugmentParams, size: tuple[int, int]):
        super().__init__()
        self.params, self.size = params, (int(size[0]), int(size[1]))
        p = params
        probabilities = {
            "crop": 1.0,
            "rotation": p.rotation_p * (p.rotation > 0),
            "hflip": p.hflip_p,
            "vflip": p.vflip_p,
            "brightness_contrast": p.color_p,
            "gamma": p.gamma_p,
            "contrast_factor": p.contrast_factor_p,
            "blur": p.blur_p,
            "sharpness": p.sharpness_p,
            "noise": p.noise_p * (p.noise_std > 0),
            "erasing": p.erasing_p,
        }
        self.ops: tuple[str, ...] = tuple(name for name, prob in probabilities.items() if prob > 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p, n, device = self.params, len(images), images.device

        def drawn(probability: float) -> torch.Tensor:
            return torch.rand(n, device=device) < probability

        def uniform(bounds: tuple[float, float]) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, device=device)

        boxes = sample_crop_boxes(n, images.shape[-2:], p.crop_scale, p.crop_ratio, device)
        angles = torch.zeros(n, device=device)
        if "rotation" in self.ops:
            angles = uniform((-p.rotation, p.rotation)) * drawn(p.rotation_p)
        no_flip = torch.zeros(n, dtype=torch.bool, device=device)
        hflip = drawn(p.hflip_p) if "hflip" in self.ops else no_flip
        vflip = drawn(p.vflip_p) if "vflip" in self.ops else no_flip
        x = warp_views(images, *view_maps(boxes, angles, hflip, vflip, self.size), self.size)
        if "brightness_contrast" in self.ops:
            applied = drawn(p.color_p)
            brightness = torch.where(applied, uniform((max(0.0, 1 - p.brightness), 1 + p.brightness)), 1.0)
            contrast = torch.where(applied, uniform((max(0.0, 1 - p.contrast), 1 + p.contrast)), 1.0)
            x = brightness_contrast(x, brightness, contrast, drawn(0.5))
        if "gamma" in self.ops:
            applied = drawn(p.gamma_p)
            x = gamma_gain(
                x, torch.where(applied, uniform(p.gamma), 1.0), torch.where(applied, uniform(p.gamma_gain), 1.0)
            )
        if "contrast_factor" in self.ops:
            x = scale_contrast(x, torch.where(drawn(p.contrast_factor_p), uniform(p.contrast_factor), 1.0))
        if "blur" in self.ops:
            kernels = gaussian_kernels(uniform(p.blur_sigma), p.blur_kernel)
            delta = torch.zeros_like(kernels[0])
            delta[p.blur_kernel // 2] = 1
            x = gaussian_blur(x, torch.where(drawn(p.blur_p)[:, None], kernels, delta))
        if "sharpness" in self.ops:
            x = sharpen(x, torch.where(drawn(p.sharpness_p), uniform(p.sharpness), 1.0))
        if "noise" in self.ops:
            x = add_noise(x, torch.randn_like(x), p.noise_std * drawn(p.noise_p))
        if "erasing" in self.ops:
            boxes = sample_erase_boxes(n, self.size, p.erasing_scale, device)
            x = erase(x, boxes * drawn(p.erasing_p)[:, None])
        return x


def build_augment(params: AugmentParams, size: tuple[int, int]) -> BatchAugment:
    """A module mapping ``[B, 1, H, W]`` in [0, 1] to augmented views of shape ``[B, 1, *size]``."""
    return BatchAugment(params, size)
