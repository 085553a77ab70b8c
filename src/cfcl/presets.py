"""YAML presets shipped with the package (``configs/`` in the repository points here)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_dir() -> Path:
    return Path(str(resources.files("cfcl") / "configs"))


def resolve_config_path(name: str | Path) -> Path:
    """A config argument is a file path, or the name of a shipped preset (``demo``, ``padchest``...)."""
    path = Path(name)
    if path.is_file():
        return path
    preset = preset_dir() / f"{path.stem}.yaml"
    return preset if preset.is_file() and path.parent == Path(".") else path
