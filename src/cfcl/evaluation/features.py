"""Frozen-encoder features of every image in a store, extracted once and cached on disk; under
several processes each rank extracts a shard of the rows (docs/architecture.md, "Several processes")."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cfcl import atomic
from cfcl.distributed import Coordinator, rank_rows
from cfcl.errors import StoreError


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


def shard_file(folder: Path, key: str, rows: range) -> Path:
    """Where one rank's shard of the array cached under ``key`` waits to be merged."""
    return Path(folder) / f"{key}.rows{rows.start}-{rows.stop}.npy"


def cached(
    folder: Path,
    key: str,
    n: int,
    extract: Callable[[range], np.ndarray],
    unit: int = 1,
    coordinator: Coordinator | None = None,
) -> np.ndarray | None:
    """``folder/<key>.npy`` if present, else the ``[n, D]`` array that ``extract(rows)`` gives for
    each range of rows, written there atomically.

    One process extracts every row at once. Under several (``coordinator``) each rank extracts its
    contiguous share of whole ``unit``s of rows (:func:`cfcl.distributed.rank_rows`; a unit is a
    batch, so every batch is the one a single process makes) into its own shard file, which an
    interrupted run leaves behind and a rerun on as many ranks reuses; once every rank is done,
    rank 0 merges the shards into ``<key>.npy`` and removes them. Rank 0 gets the array, the
    other ranks None.
    """
    coordinator = coordinator or Coordinator.single()
    rank, world = coordinator.ranks.rank, coordinator.ranks.world_size
    path = Path(folder) / f"{key}.npy"
    if coordinator.agree(path.is_file() if rank == 0 else None, f"features {key}: cached?"):
        return np.load(path) if rank == 0 else None
    if world == 1:
        array = extract(range(n))
        save_array(path, array)
        return array
    rows = rank_rows(n, rank, world, unit)
    if len(rows) and not shard_file(folder, key, rows).is_file():
        save_array(shard_file(folder, key, rows), extract(rows))
    coordinator.barrier(f"features {key}: shards")
    if rank != 0:
        return None
    shares = [s for s in (rank_rows(n, r, world, unit) for r in range(world)) if len(s)]
    missing = [shard_file(folder, key, s) for s in shares if not shard_file(folder, key, s).is_file()]
    if missing:
        raise StoreError(
            f"{missing[0]} is missing after every rank extracted its rows; {folder} must be on a filesystem every "
            "rank shares"
        )
    array = np.concatenate([np.load(shard_file(folder, key, s)) for s in shares])
    save_array(path, array)
    for shard in Path(folder).glob(f"{key}.rows*.npy"):
        shard.unlink()
    return array
