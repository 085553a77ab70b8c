"""The parents of the image in the causal model (scanner, optionally sex, age...).

A :class:`ParentSpec` says how one metadata column becomes model input: a discrete parent is
one-hot encoded over ``n_classes`` integer codes, a continuous one is standardised with the
mean and spread of the training images. Parent values travel as ``dict[str, Tensor]``:
discrete as ``LongTensor`` codes, continuous as ``FloatTensor`` in the column's own units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from cfcl.data.store import ImageStore
from cfcl.errors import CfclError, StoreError

MAX_INTEGER_CLASSES = 16


class ParentError(CfclError):
    """A parent value the model cannot take (a class it never saw, an unknown parent)."""


@dataclass(frozen=True)
class ParentSpec:
    """How one parent enters the model; ``seen`` lists the discrete classes present in training."""

    name: str
    kind: Literal["discrete", "continuous"]
    n_classes: int = 0
    seen: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = field(default=())

    @property
    def width(self) -> int:
        """Number of model inputs this parent takes."""
        return self.n_classes if self.kind == "discrete" else 1

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ParentSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _column(store: ImageStore, name: str) -> pd.Series:
    if name not in store.meta.columns:
        raise StoreError(
            f"image store {store.path}: parent '{name}' is not a column of metadata.csv "
            f"(columns: {', '.join(store.meta.columns)})"
        )
    return store.meta[name]


def parent_specs(
    store: ImageStore, names: list[str] | tuple[str, ...], indices: np.ndarray | None = None
) -> list[ParentSpec]:
    """Specs for ``names`` from the store's metadata; statistics over the rows ``indices`` (default all).

    ``domain`` is discrete over the store's domains; text columns are discrete over their sorted
    values; integer columns are discrete codes unless they take more than ``MAX_INTEGER_CLASSES``
    values (e.g. age in years); float columns are continuous."""
    if not names:
        raise ParentError("at least one parent is needed (e.g. parents: [domain])")
    rows = np.arange(len(store)) if indices is None else np.asarray(indices)
    specs = []
    for name in names:
        col = _column(store, name)
        values = col.iloc[rows]
        if name == "domain":
            seen = sorted(int(v) for v in values.unique())
            specs.append(ParentSpec(name, "discrete", len(store.domains), tuple(seen), tuple(store.domains)))
        elif pd.api.types.is_float_dtype(col) or (
            pd.api.types.is_integer_dtype(col) and col.nunique() > MAX_INTEGER_CLASSES
        ):
            numeric = values.astype(float)
            std = float(numeric.std()) if len(numeric) > 1 else 1.0
            specs.append(ParentSpec(name, "continuous", mean=float(numeric.mean()), std=std if std > 0 else 1.0))
        elif pd.api.types.is_integer_dtype(col):
            n = int(col.max()) + 1
            if int(col.min()) < 0:
                raise StoreError(f"image store {store.path}: discrete parent '{name}' has negative codes")
            specs.append(ParentSpec(name, "discrete", n, tuple(sorted(int(v) for v in values.unique()))))
        else:
            categories = tuple(sorted(str(v) for v in col.unique()))
            seen = tuple(sorted(categories.index(str(v)) for v in values.unique()))
            specs.append(ParentSpec(name, "discrete", len(categories), seen, categories, categories=categories))
    return specs


def known_values(spec: ParentSpec) -> list[int]:
    """The codes a discrete parent took in training, less an empty name (an unknown value, e.g. a missing sex)."""
    return [v for v in spec.seen if v >= len(spec.names) or spec.names[v] != ""]


def require_two_values(spec: ParentSpec, subject: str, where: str, error: type[CfclError] = ParentError) -> None:
    """``spec`` must be a discrete parent with two known values or more ``where`` (e.g. "in split train"):
    else a one-line ``error`` saying ``cannot <subject>: ...``."""
    if spec.kind != "discrete":
        raise error(f"cannot {subject}: it is continuous, not discrete")
    known = known_values(spec)
    if len(known) < 2:
        seen = ", ".join(spec.names[v] if v < len(spec.names) else str(v) for v in known) or "none"
        raise error(f"cannot {subject}: it has one value ({seen}) {where}")


def intervened_specs(specs: list[ParentSpec], names: list[str], generator: Path) -> list[ParentSpec]:
    """The specs of the parents to intervene on: discrete parents of the generator with two known values or more in
    training."""
    by_name = {s.name: s for s in specs}
    chosen = []
    for name in names:
        spec = by_name.get(name)
        if spec is None:
            raise ParentError(
                f"cannot intervene on parent '{name}': generator {generator} was conditioned on {', '.join(by_name)} "
                "only"
            )
        require_two_values(spec, f"intervene on parent '{name}' of generator {generator}", "in the training split")
        chosen.append(spec)
    return chosen


def value_names(spec: ParentSpec) -> list[str]:
    """The names of a discrete parent's codes (an integer column's codes name themselves)."""
    return list(spec.names) or [str(v) for v in range(spec.n_classes)]


def parents_from_store(store: ImageStore, indices: np.ndarray, specs: list[ParentSpec]) -> dict[str, torch.Tensor]:
    """Parent values of the images ``indices``: discrete codes as long, continuous as float."""
    rows = np.asarray(indices)
    pa = {}
    for spec in specs:
        values = _column(store, spec.name).iloc[rows]
        if spec.kind == "continuous":
            pa[spec.name] = torch.tensor(values.astype(float).to_numpy(), dtype=torch.float32)
        elif spec.categories:
            lookup = {c: i for i, c in enumerate(spec.categories)}
            unknown = sorted({str(v) for v in values} - set(lookup))
            if unknown:
                raise ParentError(f"parent '{spec.name}' has values {unknown} the model never saw")
            pa[spec.name] = torch.as_tensor([lookup[str(v)] for v in values], dtype=torch.long)
        else:
            pa[spec.name] = torch.tensor(values.astype(np.int64).to_numpy(), dtype=torch.long)
    return pa


def parents_to(pa: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Parent values moved to ``device``."""
    return {k: v.to(device) for k, v in pa.items()}


def intervene(pa: dict[str, torch.Tensor], **changes) -> dict[str, torch.Tensor]:
    """A copy of ``pa`` with the named parents set to new values (a scalar or one value per image)."""
    out = dict(pa)
    for name, value in changes.items():
        if name not in pa:
            raise ParentError(f"cannot intervene on '{name}': parents are {', '.join(pa)}")
        old = pa[name]
        out[name] = torch.as_tensor(value, dtype=old.dtype, device=old.device).expand_as(old).clone()
    return out


def check_discrete(spec: ParentSpec, values: torch.Tensor) -> None:
    """One-line error if ``values`` holds a class of ``spec`` that the model never saw in training."""
    unseen = sorted(set(torch.unique(values).tolist()) - set(spec.seen))
    if unseen:
        label = [spec.names[v] if 0 <= v < len(spec.names) else str(v) for v in unseen]
        raise ParentError(
            f"parent '{spec.name}' value(s) {', '.join(map(str, label))} never seen in training "
            f"(seen: {', '.join(spec.names[v] if v < len(spec.names) else str(v) for v in spec.seen)})"
        )


def encode_parents(pa: dict[str, torch.Tensor], specs: list[ParentSpec]) -> torch.Tensor:
    """``[B, sum(width)]`` model input: one-hot discrete parents, standardised continuous ones."""
    missing = [s.name for s in specs if s.name not in pa]
    if missing:
        raise ParentError(f"parent(s) {', '.join(missing)} missing; the model takes {', '.join(s.name for s in specs)}")
    parts = []
    for spec in specs:
        value = pa[spec.name]
        if spec.kind == "discrete":
            if value.numel() and (int(value.min()) < 0 or int(value.max()) >= spec.n_classes):
                raise ParentError(
                    f"parent '{spec.name}' must be a class code in [0, {spec.n_classes}), got {value.tolist()}"
                )
            parts.append(torch.nn.functional.one_hot(value.long(), spec.n_classes).float())
        else:
            parts.append(((value.float() - spec.mean) / spec.std).unsqueeze(1))
    return torch.cat(parts, dim=1)
