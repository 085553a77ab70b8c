"""Frozen-encoder features of every image in a store, extracted once and cached on disk."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cfcl import atomic


def image_batch(images: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 store rows ``[B, H, W]`` as float32 ``[B, 1, H, W]`` in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.ascontiguousarray(images[rows]))
    return batch.to(device=device, dtype=torch.float32).div_(255).unsqueeze(1)


@torch.inference_mode()
def extract_features(
    encoder: nn.Module, images: np.ndarray, batch_size: int = 256, device: torch.device | None = None
) -> np.ndarray:
    """``[N, D]`` float32 features of all ``images`` (uint8 ``[N, H, W]``), BatchNorm in eval mode."""
    device = device or torch.device("cpu")
    was_training = encoder.training
    encoder.eval().to(device)
    chunks = []
    for start in range(0, len(images), batch_size):
        rows = np.arange(start, min(start + batch_size, len(images)))
        chunks.append(encoder(image_batch(images, rows, device)).float().cpu().numpy())
    encoder.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def cache_key(*parts: str) -> str:
    """Short stable key of an encoder fingerprint and a store content hash."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file, so a reader never sees half an array."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic.write_bytes(path, buffer.getvalue())


def cached(folder: Path, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``folder/<key>.npy`` if present, else ``compute()`` written there atomically."""
    path = Path(folder) / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    array = compute()
    save_array(path, array)
    return array
