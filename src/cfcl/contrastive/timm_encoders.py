"""Encoders from timm (``encoder.arch: timm/<name>``): any timm model as a 1-channel feature extractor.

timm does the adaptations cfcl writes by hand for its torchvision encoders: ``in_chans=1`` sums
pretrained RGB stem filters to one channel, ``num_classes=0`` leaves pooled features, and
``dynamic_img_size`` resamples a ViT's position embeddings to each input's patch grid
(``dynamic_img_pad``: any image size, padded to whole patches). Pretraining makes a ViT for the size
of its training images (:func:`with_image_size`), so only other sizes (DINO's local crops) are
resampled. Pretrained weights go through
timm's loading too (a local file, a timm pretrained tag, or a Hugging Face Hub repository).
timm is imported only when a timm encoder is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from cfcl.contrastive.weights import first_difference
from cfcl.errors import CfclError, CheckpointError, ConfigError

TIMM_PREFIX = "timm/"
HF_HUB_PREFIX = "hf-hub:"


def is_timm_arch(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


def timm_name(arch: str) -> str:
    """The timm model name of ``arch`` (``timm/<name>``); an unknown name is a one-line ``ConfigError``."""
    import timm

    name = arch[len(TIMM_PREFIX) :]
    if not name or not timm.is_model(name):
        raise ConfigError(f"encoder.arch {arch!r}: timm has no model {name!r} (timm.list_models() lists them)")
    return name


def _patch_size(name: str, arch_kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """The patch size of timm model ``name`` when it cuts images into patches (a ViT), else None. The
    model is made on the meta device: nothing is allocated, initialised or downloaded."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(name, in_chans=1, num_classes=0, **arch_kwargs)
    except TypeError:
        return None  # arguments that do not fit the model: building the encoder says so
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    return None if patch is None else tuple(patch)


def with_image_size(arch: str, arch_kwargs: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
    """``arch_kwargs`` with ``img_size`` the size of the images a timm ViT trains on (unless set), so its
    position embeddings are made for their patch grid instead of timm's default (224) and resampled
    at every forward; a size that is not a whole number of patches is a one-line ``ConfigError``.
    Other encoders' arguments are returned as they are."""
    if not is_timm_arch(arch) or "img_size" in arch_kwargs:
        return arch_kwargs
    patch = _patch_size(timm_name(arch), arch_kwargs)
    if patch is None:
        return arch_kwargs
    height, width = image_size
    if height % patch[0] or width % patch[1]:
        raise ConfigError(
            f"encoder {arch}: the training images' size {height}x{width} is not a multiple of its patch size "
            f"{patch[0]}x{patch[1]}; prepare the store at a multiple of it (--size) or set encoder.arch_kwargs.img_size"
        )
    return {**arch_kwargs, "img_size": [height, width]}


def _create(name: str, arch_kwargs: dict[str, Any], **pretrained: Any) -> nn.Module:
    """``timm.create_model(name, in_chans=1, num_classes=0)``, for ViTs (models that take them) with
    ``dynamic_img_size`` and ``dynamic_img_pad``: any input size, padded to whole patches."""
    import timm

    kwargs = {"in_chans": 1, "num_classes": 0, **arch_kwargs}
    try:
        return timm.create_model(name, dynamic_img_size=True, dynamic_img_pad=True, **kwargs, **pretrained)
    except TypeError as exc:
        if "dynamic_img_size" not in str(exc):
            raise ConfigError(f"encoder.arch_kwargs {arch_kwargs} do not fit timm model {name!r} ({exc})") from None
    try:
        return timm.create_model(name, **kwargs, **pretrained)
    except TypeError as exc:
        raise ConfigError(f"encoder.arch_kwargs {arch_kwargs} do not fit timm model {name!r} ({exc})") from None


def _read_file(path: Path) -> dict:
    """The state dict in a ``.pth``/``.pt``/``.bin``/``.safetensors`` file, as timm reads checkpoints."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise CheckpointError(f"pretrained weights file {path} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(
            f"pretrained weights file {path} is not a readable state_dict ({first_difference(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"pretrained weights file {path} is not a state_dict")
    return state


def _pretrained_source(name: str, weights: str) -> tuple[str, dict[str, Any], dict | None]:
    """The timm model name and ``create_model`` arguments for ``weights`` and the state dict they
    hold (None for timm's own tags, which fit by construction).

    ``hf-hub:<org>/<repo>``: that Hub repository's weights (timm's format) from the network or the
    Hugging Face cache; a pretrained tag of ``name`` (``timm.list_pretrained``): timm's; anything
    else: a local file."""
    import timm
    from timm.models import load_state_dict_from_hf

    if weights.startswith(HF_HUB_PREFIX):
        state = load_state_dict_from_hf(weights[len(HF_HUB_PREFIX) :])
    elif f"{name}.{weights}" in timm.list_pretrained(f"{name}.*"):
        return f"{name}.{weights}", {"pretrained": True}, None
    else:
        state = _read_file(Path(weights))
    return name, {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": state}}, state


def build_timm(arch: str, weights: str | os.PathLike | None, arch_kwargs: dict[str, Any]) -> nn.Module:
    """The timm model of ``arch`` with ``out_channels`` (its ``num_features``), randomly initialised or
    from ``weights``; weights that do not fit are a one-line error naming the first key."""
    name = timm_name(arch)
    if weights is None:
        model = _create(name, arch_kwargs)
    else:
        weights = str(weights)
        source = weights if weights.startswith(HF_HUB_PREFIX) else f"file {weights}"
        try:
            name, pretrained, state = _pretrained_source(name, weights)
            model = _create(name, arch_kwargs, **pretrained)
        except CfclError:
            raise
        except Exception as exc:  # noqa: BLE001 - no network, no cache, a missing repository: one user error
            if "loading state_dict" in str(exc):
                raise CheckpointError(
                    f"pretrained weights {source} does not fit encoder {arch}: {first_difference(exc)}"
                ) from None
            raise CheckpointError(
                f"pretrained weights {weights} for encoder {arch}: timm could not load them ({first_difference(exc)}); "
                "without network access, use the local Hugging Face cache or a local weights file"
            ) from None
        # timm loads non-strictly once the classifier is dropped: a key the weights lack would stay random
        missing = sorted(set(model.state_dict()) - set(state)) if state is not None else []
        if missing:
            raise CheckpointError(f"pretrained weights {source} does not fit encoder {arch}: it has no {missing[0]}")
    model.out_channels = model.num_features
    return model
