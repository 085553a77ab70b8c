"""Images from outside cfcl: files decoded as a store's images were, and batches checked for a model.

``cfcl data prepare`` records its decoding (size, intensity mapping, masking) in the store's
``store.json`` under ``decode``; :func:`read_images` decodes a user's PNG/JPEG/DICOM files with
exactly those options through :func:`cfcl.data.imageio.decode`, so a model sees a file as it
saw its training images. A store without the record (the synthetic benchmark, or one prepared
by an older cfcl) gets the defaults of ``cfcl data prepare`` at the store's size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, fields

import numpy as np
import torch

from cfcl.data.imageio import DecodeOptions, decode
from cfcl.data.store import ImageStore
from cfcl.errors import CfclError, StoreError

DECODE_KEY = "decode"


def decode_record(options: DecodeOptions) -> dict:
    """``options`` as the JSON-ready dict ``cfcl data prepare`` writes into ``store.json``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


def decode_options_of(store: ImageStore) -> tuple[DecodeOptions, bool]:
    """How ``store``'s images were decoded, and whether the store recorded it (else prepare's defaults)."""
    record = store.info.get(DECODE_KEY)
    if record is None:
        return DecodeOptions(*store.size), False
    known = {f.name for f in fields(DecodeOptions)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise StoreError(
            f"image store {store.path}: {DECODE_KEY} in store.json has unknown key(s) {', '.join(unknown)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    return DecodeOptions(**values), True


def read_images(
    paths: Sequence[str | os.PathLike], store: ImageStore | str | os.PathLike, laterality: str = ""
) -> torch.Tensor:
    """Decode PNG/JPEG/DICOM files as ``cfcl data prepare`` decoded ``store``'s images.

    Returns float32 ``[N, 1, H, W]`` in [0, 1] (H, W: the store's image size; 0 is black, bright
    means dense, also for MONOCHROME1 DICOM). ``laterality`` ('L'/'R') matters only for stores
    whose preparation flips right breasts."""
    store = store if isinstance(store, ImageStore) else ImageStore.open(store)
    options, _ = decode_options_of(store)
    images = (
        np.stack([decode(path, options, laterality) for path in paths])
        if paths
        else np.zeros((0, *store.size), np.uint8)
    )
    return torch.from_numpy(images).float().div_(255).unsqueeze(1)


def describe_batch(shape: Sequence[int]) -> str:
    """``3-channel 32x32`` for an image batch shape ``[B, C, H, W]`` or ``[B, H, W]``."""
    channels = shape[1] if len(shape) == 4 else 1
    return f"{channels}-channel {shape[-2]}x{shape[-1]}" if len(shape) >= 3 else f"{len(shape)}-D"


def image_batch_of(images: np.ndarray | torch.Tensor, size: Sequence[int] | None, model: str) -> torch.Tensor:
    """``images`` as float32 ``[B, 1, H, W]`` in [0, 1]; one-line error unless they fit ``model``.

    Accepts ``[B, H, W]`` or ``[B, 1, H, W]``: uint8 (0..255, as in an image store) or float in
    [0, 1]. ``size`` ``(H, W)`` is what ``model`` (named in errors) takes; None: any size."""
    batch = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    expected = f"1-channel {size[0]}x{size[1]}" if size is not None else "1-channel"
    shape = tuple(batch.shape)
    if batch.ndim == 3:
        batch = batch.unsqueeze(1)
    fits = batch.ndim == 4 and batch.shape[1] == 1 and (size is None or tuple(batch.shape[2:]) == tuple(size))
    if not fits:
        raise CfclError(
            f"images are {describe_batch(shape)} ({list(shape)}); {model} takes {expected} images "
            "([B, 1, H, W] or [B, H, W])"
        )
    if batch.dtype == torch.uint8:
        return batch.float().div_(255)
    if not batch.is_floating_point():
        raise CfclError(f"images are {batch.dtype}; {model} takes uint8 (0..255) or float images in [0, 1]")
    batch = batch.float()
    if batch.numel() and (float(batch.min()) < 0.0 or float(batch.max()) > 1.0):
        raise CfclError(
            f"images hold values in [{float(batch.min()):.3g}, {float(batch.max()):.3g}]; {model} takes float images "
            "in [0, 1]"
        )
    return batch
