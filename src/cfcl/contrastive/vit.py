"""1-channel Vision Transformers: torchvision's ``VisionTransformer`` behind lightly's masking wrapper.

torchvision holds the transformer (and reads torchvision's ImageNet weight files);
``lightly``'s ``MaskedVisionTransformerTorchvision`` adds what self-distillation needs and
torchvision lacks: a mask token for iBOT's masked patches, and positional embeddings
resampled to any input size that is a multiple of the patch size (DINO's small local crops,
non-square stores such as EMBED's 224 x 192).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules import MaskedVisionTransformerTorchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from cfcl.contrastive.weights import load_weights, read_torchvision_weights
from cfcl.errors import ConfigError

# "vit" is set freely (the CPU benchmark's small one); the presets take only ``image_size``.
VIT_PRESETS: dict[str, dict[str, int]] = {
    "vit_s16": {"patch_size": 16, "width": 384, "depth": 12, "heads": 6, "mlp_dim": 1536},
    "vit_b16": {"patch_size": 16, "width": 768, "depth": 12, "heads": 12, "mlp_dim": 3072},
}
VIT_ARCHS = ("vit", *VIT_PRESETS)
VIT_DEFAULTS = {"image_size": 64, "patch_size": 8, "width": 64, "depth": 4, "heads": 4, "mlp_dim": 128}


def vit_kwargs(arch: str, arch_kwargs: dict[str, Any]) -> dict[str, int]:
    """The full ViT arguments of ``arch``; a one-line ``ConfigError`` names a wrong key."""
    allowed = set(VIT_DEFAULTS) if arch == "vit" else {"image_size"}
    unknown = sorted(set(arch_kwargs) - allowed)
    if unknown:
        raise ConfigError(f"encoder.arch_kwargs: {arch!r} takes {sorted(allowed)}, got {unknown}")
    kwargs = {**VIT_DEFAULTS, "image_size": 224, **VIT_PRESETS[arch]} if arch != "vit" else dict(VIT_DEFAULTS)
    kwargs.update(arch_kwargs)
    if kwargs["image_size"] % kwargs["patch_size"]:
        raise ConfigError(
            f"encoder.arch_kwargs.image_size {kwargs['image_size']} is not a multiple of "
            f"patch_size {kwargs['patch_size']}"
        )
    if kwargs["width"] % kwargs["heads"]:
        raise ConfigError(f"encoder.arch_kwargs.width {kwargs['width']} is not a multiple of heads {kwargs['heads']}")
    return kwargs


class _GridMaskedViT(MaskedVisionTransformerTorchvision):
    """Position embeddings resampled to the input's patch grid ``grid`` (lightly's assume a square one)."""

    grid: tuple[int, int] = (0, 0)

    def interpolate_pos_encoding(self, input: torch.Tensor) -> torch.Tensor:
        return resample_positions(self.vit.encoder.pos_embedding, self.grid)


class ViTBackbone(nn.Module):
    """Class token features ``[B, width]`` of ``[B, 1, H, W]`` images (H, W multiples of the patch size)."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        vit = VisionTransformer(image_size, patch_size, depth, heads, width, mlp_dim)
        vit.conv_proj = nn.Conv2d(1, width, kernel_size=patch_size, stride=patch_size)
        vit.heads = nn.Identity()
        self.vit = _GridMaskedViT(vit, pos_embed_initialization="learn")
        self.patch_size = patch_size
        self.out_channels = width

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class then patch tokens ``[B, 1 + patches, width]``; ``mask`` ``[B, patches]`` (True: masked)."""
        if mask is not None:
            mask = F.pad(mask, (1, 0), value=False)  # the class token is never masked
        self.vit.grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return self.vit.encode(x, mask=mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)[:, 0]


def build_vit(arch: str, **arch_kwargs: Any) -> ViTBackbone:
    return ViTBackbone(**vit_kwargs(arch, arch_kwargs))


def load_imagenet_vit(backbone: ViTBackbone, path: str | os.PathLike) -> None:
    """Initialise from a torchvision ``vit_*`` state_dict file: RGB patch filters summed to one
    channel, positional embeddings resampled to this image size, the classifier dropped."""
    state = read_torchvision_weights(path, ("conv_proj.weight", "encoder.pos_embedding"), "ViT")
    state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    state["conv_proj.weight"] = state["conv_proj.weight"].sum(dim=1, keepdim=True)
    side = backbone.vit.vit.image_size // backbone.patch_size
    state["encoder.pos_embedding"] = resample_positions(state["encoder.pos_embedding"], (side, side))
    load_weights(backbone.vit.vit, state, path)


def resample_positions(pos_embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[1, 1 + n, D]`` class + square-grid position embeddings resampled (bicubic) to a ``grid`` of patches."""
    n, dim = pos_embedding.shape[1] - 1, pos_embedding.shape[-1]
    side = round(n**0.5)
    if (side, side) == tuple(grid):
        return pos_embedding
    square = pos_embedding[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    resampled = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat([pos_embedding[:, :1], resampled.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)], dim=1)
