"""The generator checkpoint ``generator.pt``: a plain dict of architecture, parents and EMA weights."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cfcl import atomic
from cfcl.counterfactual.hvae import HVAE
from cfcl.errors import CheckpointError

FILE = "generator.pt"
FORMAT = "cfcl-hvae"
VERSION = 1


def generator_file(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file, else ``path/generator.pt``."""
    path = Path(path)
    return path / FILE if path.is_dir() else path


def save_generator(path: str | os.PathLike, model: HVAE, info: dict[str, Any]) -> Path:
    """Write the model's weights and architecture; ``info`` holds e.g. store hash, domains, metrics."""
    target = generator_file(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic.torch_save({"format": FORMAT, "version": VERSION, **model.arch_dict(), "info": info, "state_dict": state}, target)
    return target


def load_generator(path: str | os.PathLike) -> tuple[HVAE, dict[str, Any]]:
    """The model (eval mode, on CPU) and its info: arch, parents, image_size, store hash..."""
    target = generator_file(path)
    if not target.is_file():
        raise CheckpointError(f"generator checkpoint {target} does not exist")
    try:
        ckpt = torch.load(target, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"generator checkpoint {target} is corrupt or unreadable ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{target} is not a cfcl HVAE generator checkpoint (format {found!r}, expected {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"generator checkpoint {target} has version {ckpt.get('version')}, this cfcl reads {VERSION}")
    try:
        model = HVAE.from_arch_dict(ckpt)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"generator checkpoint {target} does not match its architecture: {first}") from None
    model.eval().requires_grad_(False)
    info = {k: ckpt[k] for k in ("image_size", "arch", "parents")} | dict(ckpt["info"])
    return model, info
