"""ImageNet weights from torchvision (a file or a weight name), read for a 1-channel encoder (ResNet or ViT)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cfcl.errors import CheckpointError


def first_difference(exc: BaseException) -> str:
    """The first informative line of an error: for ``load_state_dict``, the first key that differs."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return lines[1]
    return lines[0] if lines else type(exc).__name__


def named_torchvision_weights(model: str, name: str) -> dict[str, torch.Tensor]:
    """torchvision's weights ``name`` (``IMAGENET1K_V1``, ``DEFAULT``) of ``torchvision.models.<model>``,
    from the torch hub cache or downloaded; no network and no cached copy is a one-line :class:`CheckpointError`."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(model)[name]
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # noqa: BLE001 - no network, a broken download: the same user error
        raise CheckpointError(
            f"pretrained weights {name} of torchvision {model}: cannot fetch {weights.url} ({first_difference(exc)}); "
            "without network access, download that file elsewhere and set encoder.pretrained_weights to it"
        ) from None


def torchvision_weight_names(model: str) -> tuple[str, ...]:
    """The weight names torchvision has for ``torchvision.models.<model>``."""
    from torchvision.models import get_model_weights

    return tuple(get_model_weights(model).__members__)


def read_torchvision_weights(
    path: str | os.PathLike, required: tuple[str, ...], kind: str, model: str | None = None
) -> dict[str, torch.Tensor]:
    """The state_dict in ``path``, or torchvision's weights of that name for ``model``; a missing,
    unreadable or foreign file (one without the ``required`` keys of a torchvision ``kind``) is a
    one-line :class:`CheckpointError`."""
    if model is not None and str(path) in torchvision_weight_names(model):
        return named_torchvision_weights(model, str(path))
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"pretrained weights file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"pretrained weights file {path} is not a readable torch state_dict ({exc})") from None
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise CheckpointError(
            f"pretrained weights file {path} is not a torchvision {kind} state_dict (no {required[0]})"
        )
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch names the file and its first difference."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"pretrained weights file {path} does not fit this architecture: {first_difference(exc)}"
        ) from None
