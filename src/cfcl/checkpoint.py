"""Reading and writing cfcl's model checkpoints: plain dicts loaded with ``weights_only=True``.

Every model file (``generator.pt``, ``classifier.pt``, ``encoder.pt``) holds its architecture
next to its weights, so a loader rebuilds the model and a mismatch is a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfcl import atomic
from cfcl.errors import CheckpointError, ConfigError


def checkpoint_file(path: str | os.PathLike, name: str) -> Path:
    """``path`` itself, or ``path/name`` when ``path`` is a stage folder."""
    path = Path(path)
    return path / name if path.is_dir() else path


def plain(value: Any) -> Any:
    """Tuples to lists (recursively), so a checkpoint holds only types ``weights_only`` accepts."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_checkpoint(path: str | os.PathLike, name: str, payload: dict[str, Any], model: nn.Module) -> Path:
    """Atomically write ``payload`` plus the model's weights (on CPU) to ``path`` (file or folder)."""
    target = checkpoint_file(path, name)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic.torch_save({**plain(payload), "state_dict": state}, target)
    return target


def read_checkpoint(
    path: str | os.PathLike, name: str, what: str, required: tuple[str, ...] = (), fmt: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """Load the checkpoint dict of a ``what`` (e.g. "encoder") from ``path``, checking its keys and format."""
    target = checkpoint_file(path, name)
    if not target.is_file():
        raise CheckpointError(f"{what} checkpoint {target} does not exist")
    try:
        checkpoint = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or unpicklable files are the same user error
        raise CheckpointError(f"{what} checkpoint {target} is corrupt or unreadable ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or (fmt is not None and checkpoint.get("format") != fmt):
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{target} is not a cfcl {what} checkpoint (format {found!r}, expected {fmt!r})")
    missing = [k for k in (*required, "state_dict") if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{target} is not a cfcl {what} checkpoint (lacks {', '.join(missing)})")
    return target, checkpoint


def rebuild(target: Path, what: str, arch: str, build: Callable[[], nn.Module], state_dict: dict) -> nn.Module:
    """``build()`` the recorded architecture and load its weights; any mismatch is a CheckpointError."""
    try:
        model = build()
        model.load_state_dict(state_dict, strict=True)
    except (CheckpointError, ConfigError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{what} checkpoint {target} does not match its architecture {arch!r}: {first}") from None
    return model.eval()
