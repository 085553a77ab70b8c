"""Classifiers of one discrete parent (the scanner, ``domain``, by default; ``sex``...) over
``[B, 1, H, W]`` images in [0, 1].

Two independent ones per parent are trained on real images: the *guide* steers counterfactual
fine-tuning, the *judge* scores counterfactual quality. They differ in seed and architecture,
and the judge never guides: reusing the guide as judge is circular (docs/architecture.md,
"Counterfactual quality").
A classifier is a backbone (a plain CNN here, or one of the contrastive encoders) plus a linear
head giving one logit per value code of its parent (for the scanner, the store's domain ids).
A checkpoint records its ``parent``, the names of its codes (``values``) and those it was
trained on (``trained_values``); one written before other parents could be classified is of the
domain (``domains``, ``trained_domains``, ``n_domains``) and loads as such.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfcl.checkpoint import checkpoint_file, read_checkpoint, rebuild, write_checkpoint
from cfcl.contrastive.encoders import ARCHS as ENCODER_ARCHS
from cfcl.contrastive.encoders import INPUT_MEAN, INPUT_STD, build_encoder
from cfcl.errors import CheckpointError, ConfigError
from cfcl.layout import CLASSIFIER_FILE

FORMAT = "cfcl-domain-classifier"
ARCHS = ("cnn", *ENCODER_ARCHS)
ROLES = ("guide", "judge")


class PlainCNN(nn.Module):
    """Conv-BN-ReLU-maxpool stages then global average pooling: a quick, non-residual backbone."""

    def __init__(self, widths: tuple[int, ...] | list[int] = (16, 32, 64, 64)):
        super().__init__()
        layers, channels = [], 1
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - INPUT_MEAN) / INPUT_STD)


class ParentClassifier(nn.Module):
    """Backbone features -> one logit per value code of the parent."""

    def __init__(self, arch: str, n_classes: int, arch_kwargs: dict[str, Any]):
        super().__init__()
        self.arch, self.arch_kwargs, self.n_classes = arch, dict(arch_kwargs), n_classes
        self.backbone = _build_backbone(arch, arch_kwargs)
        self.head = nn.Linear(self.backbone.out_channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _build_backbone(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    if arch not in ARCHS:
        raise ConfigError(f"unknown classifier architecture {arch!r} (expected one of {', '.join(ARCHS)})")
    if arch == "cnn":
        try:
            return PlainCNN(**arch_kwargs)
        except TypeError as exc:
            raise ConfigError(f"classifier 'cnn': invalid arguments {arch_kwargs} ({exc})") from None
    encoder = build_encoder(arch, **arch_kwargs)
    encoder.out_channels = encoder.feature_dim
    return encoder


def build_classifier(arch: str, n_classes: int, **arch_kwargs: Any) -> ParentClassifier:
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {n_classes}")
    return ParentClassifier(arch, n_classes, arch_kwargs)


def balanced_class_weights(codes: np.ndarray, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights ``n / (k * count_c)`` over the k classes present, 0 for absent ones.

    With them every present class contributes equally to the loss whatever its prevalence.
    """
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def classifier_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/classifier.pt`` when ``path`` is a (classifier stage) folder."""
    return checkpoint_file(path, CLASSIFIER_FILE)


def save_classifier(path: str | os.PathLike, model: ParentClassifier, info: dict[str, Any]) -> Path:
    """Write ``classifier.pt``; ``info`` holds role, parent, values, trained_values, image_size, seed, metrics."""
    missing = [k for k in ("role", "parent", "values", "trained_values", "image_size", "seed") if k not in info]
    if missing:
        raise ValueError(f"save_classifier: info lacks {missing}")
    if info["role"] not in ROLES:
        raise ValueError(f"save_classifier: role must be one of {ROLES}, got {info['role']!r}")
    payload = {
        **info,
        "format": FORMAT,
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "n_classes": int(model.n_classes),
    }
    return write_checkpoint(path, CLASSIFIER_FILE, payload, model)


def _of_the_domain(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before other parents could be classified, in today's keys."""
    renamed = {"domains": "values", "trained_domains": "trained_values", "n_domains": "n_classes"}
    return {"parent": "domain", **{renamed.get(k, k): v for k, v in checkpoint.items()}}


def load_classifier(path: str | os.PathLike) -> tuple[ParentClassifier, dict[str, Any]]:
    """The classifier at ``path`` (file or stage folder) in eval mode, and its info (all but the weights)."""
    target, checkpoint = read_checkpoint(path, CLASSIFIER_FILE, "classifier", ("arch", "arch_kwargs"), FORMAT)
    if "parent" not in checkpoint:
        checkpoint = _of_the_domain(checkpoint)
    if "n_classes" not in checkpoint:
        raise CheckpointError(f"{target} is not a cfcl classifier checkpoint (lacks n_classes)")
    if checkpoint.get("role") not in ROLES:
        raise CheckpointError(
            f"classifier checkpoint {target} has role {checkpoint.get('role')!r}, expected one of {ROLES}"
        )
    model = rebuild(
        target,
        "classifier",
        checkpoint["arch"],
        lambda: build_classifier(checkpoint["arch"], checkpoint["n_classes"], **checkpoint["arch_kwargs"]),
        checkpoint["state_dict"],
    )
    info = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model.eval(), info
