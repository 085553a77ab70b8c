"""Typed, validated configuration shared by every stage.

Each stage has one pydantic model (``extra="forbid"``). A config is built from defaults,
then an optional YAML file, then ``--set dotted.key=value`` overrides, and validated once;
any problem becomes a one-line :class:`ConfigError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cfcl.errors import ConfigError
from cfcl.presets import resolve_config_path

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
    #: Keys that do not change what the stage writes (how many processes share the work): left out of its config hash.
    unhashed: ClassVar[frozenset[str]] = frozenset()


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a section annotated ``Model`` or ``Model | None``; None for a plain value."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _field_names(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Allowed keys of the (nested) model section that ``loc`` points into."""
    current: type[BaseModel] | None = model
    for part in loc:
        field = current.model_fields.get(str(part)) if current is not None else None
        if field is None:
            return None
        current = _section_model(field.annotation)
    return sorted(current.model_fields) if current is not None else None


def _describe(model: type[BaseModel], err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not isinstance(p, int))
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = _field_names(model, loc[:-1]) or []
        return f"{source}: unknown key '{key}' (allowed here: {', '.join(allowed)})"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f", got {value!r}"
    return f"{source}: invalid value for '{key}': {first['msg']}{shown}"


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key == "a.b.c"``, creating sections as needed."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is a value, not a section")
        node = child
    _forget_other_arch(node, parts[-1], value)
    node[parts[-1]] = value


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Turn ``["a.b=3", "c=[1, 2]"]`` into ``[("a.b", 3), ("c", [1, 2])]``; values are YAML."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form dotted.key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc.problem})") from None
        parsed.append((key.strip(), value))
    return parsed


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The mapping a YAML config file holds. A top-level ``preset: NAME`` builds on another file:
    a shipped preset's name or a path (relative to this file's folder); this file's keys win."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    if "preset" not in raw:
        return raw
    name = raw.pop("preset")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"config file {path}: 'preset' must name a preset or a file, got {name!r}")
    chain = (*_chain, path.resolve())
    local = path.parent / name
    base = local if local.is_file() else resolve_config_path(name)
    if not base.is_file():
        raise ConfigError(f"config file {path}: preset '{name}' is neither a shipped preset nor a file")
    if base.resolve() in chain:
        raise ConfigError(
            f"config file {path}: preset '{name}' builds on itself ({' -> '.join(p.name for p in (*chain, base))})"
        )
    inherited = read_yaml(base, chain)
    merge(inherited, raw)
    return inherited


def build_config(
    model: type[M],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: dict | None = None,
    source: str | None = None,
) -> M:
    """Defaults <- ``base`` <- YAML file <- overrides, validated as ``model``.

    ``source`` names where the values came from in error messages (default: the file).
    """
    raw: dict = json.loads(json.dumps(base or {}))
    if path is not None:
        merge(raw, read_yaml(path))
    for key, value in parse_overrides(overrides):
        set_dotted(raw, key, value)
    if source is None:
        source = f"config {path}" if path is not None else "config"
        if overrides:
            source += " (with --set overrides)"
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(model, err, source)) from None


def _forget_other_arch(section: dict, key: str, value: Any) -> None:
    """A section's ``arch_kwargs`` belong to its ``arch``: setting another arch drops them."""
    if key == "arch" and section.get("arch") not in (None, value):
        section.pop("arch_kwargs", None)


def merge(dst: dict, src: dict) -> None:
    """Merge ``src`` into ``dst`` in place, section by section (later values win); a new ``arch``
    starts from empty ``arch_kwargs``."""
    if "arch" in src:
        _forget_other_arch(dst, "arch", src["arch"])
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            merge(dst[key], value)
        else:
            dst[key] = value


def config_dict(config: BaseModel) -> dict:
    """Plain JSON-able dict of a config (paths as strings)."""
    return config.model_dump(mode="json")


def config_hash(config: BaseModel) -> str:
    """Stable content hash of a config, used to decide whether a stage's output is up to date.

    A path that exists counts by its place in the config, not by its value: it is an input of
    the stage, whose content the stage manifest fingerprints, so a moved or copied run folder
    stays up to date. The keys a model or any of its sections lists in ``unhashed`` do not count.
    """
    text = json.dumps(
        _without_input_paths(config.model_dump(mode="python", exclude=_unhashed(config))), sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unhashed(config: BaseModel) -> dict:
    """The ``exclude`` of ``model_dump`` that leaves out the ``unhashed`` keys of ``config`` and of its sections."""
    exclude: dict = {key: True for key in getattr(config, "unhashed", ())}
    for key in type(config).model_fields:
        section = getattr(config, key)
        if key not in exclude and isinstance(section, BaseModel) and (inner := _unhashed(section)):
            exclude[key] = inner
    return exclude


def is_input_path(value: Any) -> bool:
    """A config value that names a stage input: a path that exists."""
    return isinstance(value, Path) and value.exists()


def _without_input_paths(value: Any) -> Any:
    if is_input_path(value):
        return "<input>"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _without_input_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_input_paths(v) for v in value]
    return value
