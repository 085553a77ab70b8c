"""ImageNet weight files from torchvision, read for a 1-channel encoder (ResNet or ViT)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cfcl.errors import CheckpointError


def read_torchvision_weights(path: str | os.PathLike, required: tuple[str, ...], kind: str) -> dict[str, torch.Tensor]:
    """The state_dict in ``path``; a missing, unreadable or foreign file (one without the ``required``
    keys of a torchvision ``kind``) is a one-line :class:`CheckpointError`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"pretrained weights file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"pretrained weights file {path} is not a readable torch state_dict ({exc})") from None
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise CheckpointError(f"pretrained weights file {path} is not a torchvision {kind} state_dict (no {required[0]})")
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch names the file and its first difference."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"pretrained weights file {path} does not fit this architecture: {first}") from None
