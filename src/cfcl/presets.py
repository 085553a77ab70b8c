"""YAML presets shipped with the package (``configs/`` in the repository points here): run presets
(``cfcl run NAME``) in ``run/``, stage presets (``--config NAME`` of one stage) in ``stage/``.
A preset is named by its file's stem alone, so no stem may be in both folders."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("run", "stage")


def _folder(kind: str) -> Path:
    return Path(str(resources.files("cfcl") / "configs" / kind))


def preset_names(kind: str) -> list[str]:
    """The names of the shipped presets of one kind, ``run`` or ``stage``, sorted."""
    if kind not in KINDS:
        raise ValueError(f"preset kind {kind!r}: expected one of {', '.join(KINDS)}")
    return sorted(p.stem for p in _folder(kind).glob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """A config argument is a file path, or the name of a shipped preset (``demo``, ``cf_train``...)."""
    path = Path(name)
    if path.is_file() or path.parent != Path("."):
        return path
    presets = (_folder(kind) / f"{path.stem}.yaml" for kind in KINDS)
    return next((preset for preset in presets if preset.is_file()), path)
