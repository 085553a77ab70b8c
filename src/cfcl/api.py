"""cfcl's public Python API: the few entry points documented in docs/python.md.

Everything here returns plain PyTorch / NumPy objects. Images are float32 ``[B, 1, H, W]`` with
values in [0, 1] (0 black, bright means dense) or, as stored in an image store, uint8
``[B, H, W]``; the rest of the package is internal and may change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cfcl.contrastive import encoders
from cfcl.counterfactual.generator.apply import Generator, open_generator
from cfcl.data import inputs
from cfcl.data.store import ImageStore
from cfcl.errors import CfclError

__all__ = ["CfclError", "Generator", "ImageStore", "embed", "load_encoder", "load_generator", "read_images"]

ImageInput = ImageStore | np.ndarray | torch.Tensor | str | os.PathLike


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """The pretrained encoder in ``encoder.pt`` or a ``cfcl pretrain`` folder, on the CPU in eval mode.

    It maps float32 ``[B, 1, H, W]`` images in [0, 1] to float32 ``[B, feature_dim]`` features
    (it normalises internally). Attributes: ``input_size`` ``(H, W)`` (the size it was trained
    at, which :func:`embed` requires), ``input_channels`` (1), ``input_range`` ``(0.0, 1.0)``,
    ``feature_dim``, ``arch`` and ``info`` (method, seed, ...)."""
    encoder, info = encoders.load_encoder(path)
    encoder.input_size = tuple(int(s) for s in info["image_size"])
    encoder.input_channels = int(info["in_channels"])
    encoder.input_range = (0.0, 1.0)
    encoder.info = info
    return encoder


@torch.inference_mode()
def embed(
    encoder: nn.Module, images: ImageInput, batch_size: int = 256, device: str | torch.device | None = None
) -> np.ndarray:
    """Features of ``images``: float32 ``[N, feature_dim]`` NumPy array, in input order.

    ``images``: an :class:`ImageStore` (or its folder; every image, in row order), uint8
    ``[N, H, W]`` or float ``[N, 1, H, W]`` in [0, 1]. Their size must be the encoder's
    ``input_size`` (if it has one). Runs in eval mode on ``device`` (default: the encoder's)."""
    if isinstance(images, (str, os.PathLike)):
        images = ImageStore.open(images)
    if isinstance(images, ImageStore):
        images = images.images
    if device is not None:
        encoder.to(device)
    device = next(encoder.parameters()).device
    size = getattr(encoder, "input_size", None)
    was_training = encoder.training
    encoder.eval()
    chunks = [np.zeros((0, getattr(encoder, "feature_dim", 0)), dtype=np.float32)]
    for start in range(0, len(images), batch_size):
        batch = inputs.image_batch_of(images[start : start + batch_size], size, "the encoder").to(device)
        chunks.append(encoder(batch).float().cpu().numpy())
    encoder.train(was_training)
    return np.concatenate(chunks)


def load_generator(path: str | os.PathLike) -> Generator:
    """The counterfactual generator in ``generator.pt`` or a ``cfcl cf train`` / ``cf finetune`` folder.

    See :class:`Generator`: ``counterfactual(images, parents, target)``, ``abduct``, ``predict``,
    ``scanners`` (the targets it knows), ``parents`` and ``image_size``."""
    return open_generator(path)


def read_images(
    paths: Sequence[str | os.PathLike], store: ImageStore | str | os.PathLike, laterality: str = ""
) -> torch.Tensor:
    """PNG/JPEG/DICOM files decoded exactly as ``cfcl data prepare`` decoded ``store``'s images.

    Returns float32 ``[N, 1, H, W]`` in [0, 1] at the store's size, ready for :func:`embed` and
    :meth:`Generator.counterfactual`. ``laterality`` ('L'/'R') matters only for mammography
    stores, whose preparation flips right breasts."""
    return inputs.read_images(paths, store, laterality)
