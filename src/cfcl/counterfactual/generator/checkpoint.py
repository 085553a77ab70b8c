"""The generator checkpoint ``generator.pt``: a plain dict of architecture, parents and EMA weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cfcl.checkpoint import checkpoint_file, read_checkpoint, rebuild, write_checkpoint
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.errors import CheckpointError
from cfcl.layout import GENERATOR_FILE

FORMAT = "cfcl-hvae"
VERSION = 1


def generator_file(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file, else ``path/generator.pt``."""
    return checkpoint_file(path, GENERATOR_FILE)


def save_generator(path: str | os.PathLike, model: HVAE, info: dict[str, Any]) -> Path:
    """Write the model's weights and architecture; ``info`` holds e.g. store hash, domains, metrics."""
    return write_checkpoint(
        path, GENERATOR_FILE, {"format": FORMAT, "version": VERSION, **model.arch_dict(), "info": info}, model
    )


def load_generator(path: str | os.PathLike) -> tuple[HVAE, dict[str, Any]]:
    """The model (eval mode, on CPU) and its info: arch, parents, image_size, store hash..."""
    target, ckpt = read_checkpoint(path, GENERATOR_FILE, "HVAE generator", ("version", "info"), FORMAT)
    if ckpt["version"] != VERSION:
        raise CheckpointError(f"generator checkpoint {target} has version {ckpt['version']}, this cfcl reads {VERSION}")
    model = rebuild(target, "generator", "hvae", lambda: HVAE.from_arch_dict(ckpt), ckpt["state_dict"])
    model.eval().requires_grad_(False)
    info = {k: ckpt[k] for k in ("image_size", "arch", "parents")} | dict(ckpt["info"])
    return model, info
