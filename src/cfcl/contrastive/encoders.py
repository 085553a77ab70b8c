"""Image encoders: 1-channel ResNets, ViTs and timm models mapping ``[B, 1, H, W]`` images in [0, 1] to features.

``build_encoder`` makes one from an architecture name (``ARCHS`` or ``timm/<name>``) and its
arguments; ``save_encoder`` / ``load_encoder`` keep it in ``encoder.pt``, a plain dict that records
everything needed to rebuild it (docs/architecture.md, "Checkpoints").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock

from cfcl.checkpoint import checkpoint_file, read_checkpoint, rebuild, write_checkpoint
from cfcl.contrastive.timm_encoders import TIMM_PREFIX, build_timm, is_timm_arch
from cfcl.contrastive.vit import VIT_ARCHS, build_vit, load_imagenet_vit
from cfcl.contrastive.weights import load_weights, read_torchvision_weights
from cfcl.errors import CheckpointError, ConfigError
from cfcl.layout import ENCODER_FILE

ARCHS = ("resnet18", "resnet34", "resnet50", "small", *VIT_ARCHS)
# Images in [0, 1] are shifted to roughly zero mean, unit spread inside the encoder.
INPUT_MEAN = 0.5
INPUT_STD = 0.25


class SmallResNet(nn.Module):
    """A narrow ResNet (torchvision's BasicBlock) with a 3x3 stem, for small images on a CPU.

    Stage ``i`` has ``width * 2**i`` channels; ``stem_stride`` 2 quarters the cost on 64 px images.
    """

    def __init__(self, width: int = 16, blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1), stem_stride: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for i, n_blocks in enumerate(blocks):
            out_channels, stride = width * 2**i, 1 if i == 0 else 2
            for b in range(n_blocks):
                downsample = None
                if b == 0 and (stride != 1 or channels != out_channels):
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
                    )
                stages.append(BasicBlock(channels, out_channels, stride if b == 0 else 1, downsample))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


def _torchvision_resnet(arch: str) -> nn.Module:
    """A torchvision ResNet with a 1-channel first convolution and no classifier."""
    model = getattr(resnet, arch)(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.out_channels = model.fc.in_features
    model.fc = nn.Identity()
    return model


def _load_imagenet(model: nn.Module, path: str | os.PathLike, arch: str) -> None:
    """Initialise from a torchvision state_dict file or weight name of ``arch``; the RGB first-layer filters are summed
    to one channel."""
    state = read_torchvision_weights(path, ("conv1.weight",), "ResNet", arch)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    load_weights(model, state, path)


class Encoder(nn.Module):
    """Normalises the [0, 1] input and returns pooled backbone features ``[B, feature_dim]``."""

    def __init__(self, arch: str, backbone: nn.Module, arch_kwargs: dict[str, Any]):
        super().__init__()
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.backbone = backbone
        self.feature_dim: int = backbone.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - INPUT_MEAN) / INPUT_STD)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ViT only: class and patch tokens ``[B, 1 + patches, feature_dim]``, ``mask`` [B, patches] patches replaced by
        the mask token."""
        return self.backbone.tokens((x - INPUT_MEAN) / INPUT_STD, mask)


def build_encoder(arch: str, pretrained_weights: str | os.PathLike | None = None, **arch_kwargs: Any) -> Encoder:
    """Encoder ``arch`` (one of ``ARCHS`` or ``timm/<name>``); ``pretrained_weights``: a torchvision
    ImageNet state_dict file or, for the torchvision ResNets, a torchvision weight name
    (``IMAGENET1K_V1``); for timm, a state_dict file, a timm pretrained tag or ``hf-hub:<org>/<repo>``."""
    if is_timm_arch(arch):
        return Encoder(arch, build_timm(arch, pretrained_weights, arch_kwargs), arch_kwargs)
    if arch not in ARCHS:
        raise ConfigError(
            f"unknown encoder architecture {arch!r} (expected one of {', '.join(ARCHS)}, or {TIMM_PREFIX}<name>)"
        )
    if arch == "small":
        try:
            backbone = SmallResNet(**arch_kwargs)
        except TypeError as exc:
            raise ConfigError(f"encoder 'small': invalid arguments {arch_kwargs} ({exc})") from None
        if pretrained_weights is not None:
            raise ConfigError("encoder 'small' has no ImageNet weights; pretrained_weights must be empty")
    elif arch in VIT_ARCHS:
        backbone = build_vit(arch, **arch_kwargs)
        if pretrained_weights is not None:
            load_imagenet_vit(backbone, pretrained_weights)
    else:
        if arch_kwargs:
            raise ConfigError(f"encoder {arch!r} takes no arguments, got {sorted(arch_kwargs)}")
        backbone = _torchvision_resnet(arch)
        if pretrained_weights is not None:
            _load_imagenet(backbone, pretrained_weights, arch)
    return Encoder(arch, backbone, arch_kwargs)


def encoder_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/encoder.pt`` when ``path`` is a (pretrain stage) folder."""
    return checkpoint_file(path, ENCODER_FILE)


def save_encoder(path: str | os.PathLike, encoder: Encoder, info: dict[str, Any]) -> Path:
    """Write ``encoder.pt`` (``info``: image_size [H, W], method, seed); returns the file written."""
    missing = [k for k in ("image_size", "method", "seed") if k not in info]
    if missing:
        raise ValueError(f"save_encoder: info lacks {missing}")
    payload = {
        "arch": encoder.arch,
        "arch_kwargs": encoder.arch_kwargs,
        "feature_dim": int(encoder.feature_dim),
        "image_size": [int(s) for s in info["image_size"]],
        "in_channels": 1,
        "method": str(info["method"]),
        "seed": int(info["seed"]),
    }
    return write_checkpoint(path, ENCODER_FILE, payload, encoder)


def load_encoder(path: str | os.PathLike) -> tuple[Encoder, dict[str, Any]]:
    """The encoder saved at ``path`` (file or stage folder), in eval mode, and its info (all but the weights)."""
    required = ("arch", "arch_kwargs", "feature_dim", "image_size", "in_channels")
    target, checkpoint = read_checkpoint(path, ENCODER_FILE, "encoder", required)
    if checkpoint["in_channels"] != 1:
        raise CheckpointError(f"encoder checkpoint {target} has {checkpoint['in_channels']} input channels, expected 1")
    encoder = rebuild(
        target,
        "encoder",
        checkpoint["arch"],
        lambda: build_encoder(checkpoint["arch"], **checkpoint["arch_kwargs"]),
        checkpoint["state_dict"],
    )
    if encoder.feature_dim != checkpoint["feature_dim"]:
        raise CheckpointError(
            f"encoder checkpoint {target} records feature_dim {checkpoint['feature_dim']}, the model gives "
            f"{encoder.feature_dim}"
        )
    info = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return encoder.eval(), info
