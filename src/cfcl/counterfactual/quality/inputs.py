"""What ``cfcl cf evaluate`` measures: an intervention, a generator (a model or a counterfactual store)
and a judge of each intervened parent.

A counterfactual store is looked up by source image and target cell; the true counterfactual
store is the perfect generator. A judge must never be the classifier that guided fine-tuning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfcl.counterfactual.classifier.model import classifier_file
from cfcl.counterfactual.generator.checkpoint import generator_file, load_generator
from cfcl.counterfactual.generator.inference import counterfactual
from cfcl.counterfactual.parents import (
    intervened_specs,
    known_values,
    parent_specs,
    parents_from_store,
    require_two_values,
    value_names,
)
from cfcl.counterfactual.quality.metrics import Parents
from cfcl.data.store import INFO, ImageStore, parent_codes
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.stage import fingerprint, read_manifest

CounterfactualFn = Callable[[torch.Tensor, Parents, Parents], torch.Tensor]


@dataclass(frozen=True)
class Intervention:
    """The intervened parents (docs/architecture.md, "Intervened parents"): the names of each one's
    value codes (the domain's: the store's domains) and its target codes. A cell is one combination
    of codes, flattened in parent order as in a counterfactual store; with the domain alone, the
    cell is the domain."""

    values: dict[str, list[str]]
    targets: dict[str, list[int]]

    @property
    def parents(self) -> list[str]:
        return list(self.values)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values.values())

    def cell(self, codes: list[np.ndarray] | list[int]) -> np.ndarray:
        """The cell of each combination of codes (one array or code per parent, in parent order)."""
        return np.ravel_multi_index(codes, self.shape)

    def codes(self, cell: int) -> dict[str, int]:
        """The code of each parent in ``cell``."""
        return {p: int(c) for p, c in zip(self.values, np.unravel_index(cell, self.shape))}

    def target_cells(self) -> list[int]:
        """Every combination of target codes, as cells."""
        return [int(self.cell(list(combo))) for combo in itertools.product(*self.targets.values())]

    def name(self, cell: int) -> str:
        return "_".join(self.values[p][c] for p, c in self.codes(cell).items())

    def own_cells(self, store: ImageStore, rows: np.ndarray) -> np.ndarray:
        """Each image's own cell, -1 where one of its values is unknown or no target (an OOD scanner not evaluated)."""
        meta = store.meta.iloc[rows]
        codes = [parent_codes(meta, p, v) for p, v in self.values.items()]
        known = np.all([(c >= 0) & np.isin(c, self.targets[p]) for p, c in zip(self.values, codes)], axis=0)
        return np.where(known, self.cell([np.maximum(c, 0) for c in codes]), -1)


def values_noun(parent: str) -> str:
    """How an error names some values of ``parent``: the scanner's are domains."""
    return "domain(s)" if parent == "domain" else f"{parent} value(s)"


def open_intervention(store: ImageStore, parents: list[str], domains: list[int]) -> Intervention:
    """The intervention on ``parents`` of the store's images: the domain to ``domains``, any other parent to
    each of its known values (two at least)."""
    values, targets = {}, {}
    for parent in parents:
        spec = parent_specs(store, [parent])[0]
        require_two_values(
            spec, f"intervene on parent '{parent}' of image store {store.path}", "in the store", ConfigError
        )
        values[parent] = value_names(spec)
        targets[parent] = domains if parent == "domain" else known_values(spec)
    return Intervention(values, targets)


@dataclass
class Generator:
    """What evaluation needs of a generator: its counterfactual function, parents, values and provenance."""

    cf_fn: CounterfactualFn
    parents: Callable[[np.ndarray], Parents]
    seen: dict[str, list[int]]  # the codes of each intervened parent it can make counterfactuals to
    cycles: bool  # composition and reversibility measurable (a store needs every image's own-cell row)
    info: dict[str, Any]
    source: Path  # the file that identifies it (checkpoint or store.json), fingerprinted as a stage input


class TableCounterfactuals:
    """A counterfactual store as a generator: ``pa["row"]`` names the source image, the intervened
    parents of ``pa_star`` the target cell."""

    def __init__(self, cf_store: ImageStore, table: np.ndarray, intervention: Intervention):
        self.cf_store, self.table, self.intervention = cf_store, table, intervention

    def __call__(self, x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
        cells = self.intervention.cell([pa_star[p].cpu().numpy() for p in self.intervention.parents])
        rows = self.table[pa["row"].cpu().numpy(), cells]
        if (rows < 0).any():
            raise StoreError(f"counterfactual store {self.cf_store.path} lacks some (image, target cell) pairs")
        return store_images(self.cf_store, rows, x.device)


def _model_generator(path: Path, store: ImageStore, intervention: Intervention, device: torch.device) -> Generator:
    model, info = load_generator(path)
    if tuple(store.size) != (info["image_size"], info["image_size"]):
        raise CheckpointError(
            f"generator {generator_file(path)} makes {info['image_size']} px images, "
            f"the store {store.path} holds {store.size}"
        )
    model = model.to(device)
    specs = intervened_specs(model.specs, intervention.parents, generator_file(path))
    differ = [s.name for s in specs if value_names(s) != intervention.values[s.name]]
    if differ:
        raise CheckpointError(
            f"generator {generator_file(path)} codes parent '{differ[0]}' otherwise than the store {store.path}"
        )

    def cf_fn(x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
        return counterfactual(model, x, pa, pa_star)

    def parents(indices: np.ndarray) -> Parents:
        return parents_from_store(store, indices, model.specs)

    provenance = {"kind": "model", "path": str(generator_file(path)), "guide": info.get("guide")}
    seen = {s.name: list(s.seen) for s in specs}
    return Generator(cf_fn, parents, seen, True, provenance, generator_file(path))


def intervened_table(cf_store: ImageStore, store: ImageStore, intervention: Intervention, what: str) -> np.ndarray:
    """The ``[images, cells]`` table of a counterfactual store of ``store`` that intervenes on exactly these parents."""
    table = cf_store.intervention_table(store, intervention.parents, what)
    intervened = cf_store.intervened
    if cf_store.cell_shape(len(store.domains)) != intervention.shape or any(
        p != "domain" and v != intervention.values[p] for p, v in intervened.items()
    ):
        raise StoreError(
            f"{what} {cf_store.path} names the values of {', '.join(intervened)} otherwise than {store.path}"
        )
    return table


def _table_generator(path: Path, store: ImageStore, intervention: Intervention) -> Generator:
    cf_store = ImageStore.open(path)
    table = intervened_table(cf_store, store, intervention, "counterfactual store")
    codes = {p: parent_codes(store.meta, p, v) for p, v in intervention.values.items()}
    present = table >= 0
    made = np.flatnonzero(present.any(axis=0))
    seen = {p: sorted({intervention.codes(c)[p] for c in made}) for p in intervention.parents}
    own = intervention.own_cells(store, np.arange(len(store)))
    has_own = present[np.arange(len(store)), np.maximum(own, 0)] | (own < 0)

    def parents(indices: np.ndarray) -> Parents:
        return {
            **{p: torch.as_tensor(c[indices], dtype=torch.long) for p, c in codes.items()},
            "row": torch.as_tensor(indices, dtype=torch.long),
        }

    provenance = {"kind": "counterfactual_store", "path": str(path)}
    return Generator(
        TableCounterfactuals(cf_store, table, intervention), parents, seen, bool(has_own.all()), provenance, path / INFO
    )


def load_any_generator(path: Path, store: ImageStore, intervention: Intervention, device: torch.device) -> Generator:
    """A generator folder / checkpoint, or a counterfactual store, of the intervention's parents."""
    if (path / INFO).is_file():
        return _table_generator(path, store, intervention)
    return _model_generator(path, store, intervention, device)


def _judge_identity(path: Path) -> set[str]:
    """Fingerprints under which a classifier can be recorded as an input: its file and its stage folder."""
    file = classifier_file(path)
    ids = {fingerprint(file)}
    manifest = read_manifest(file.parent)
    if manifest is not None and manifest.get("status") == "complete":
        ids.add(manifest["fingerprint"])
    return ids


def _recorded_guides(generator_path: Path, info_guide: Any) -> set[str]:
    """Guide fingerprints recorded by fine-tuning: the generator folder's manifest inputs (``guide``, or ``guide.<i>``
    for several guides) and its checkpoint info (one fingerprint, or a list of them)."""
    folder = generator_path if generator_path.is_dir() else generator_path.parent
    inputs = (read_manifest(folder) or {}).get("inputs") or {}
    recorded = [entry for key, entry in inputs.items() if key == "guide" or key.startswith("guide.")]
    recorded += info_guide if isinstance(info_guide, list) else [info_guide]
    return {r["fingerprint"] if isinstance(r, dict) else r for r in recorded if r}


def check_judge(
    judge_info: dict,
    judge_path: Path,
    generator_path: Path,
    info_guide: Any,
    store: ImageStore,
    intervention: Intervention,
) -> None:
    """The judge must be a judge, not the guide the generator was fine-tuned with, and know the values of its parent."""
    file = classifier_file(judge_path)
    if judge_info["role"] != "judge":
        raise ConfigError(
            f"classifier {file} has role '{judge_info['role']}'; the judge never guides: train one with --config "
            "cf_judge"
        )
    if _recorded_guides(generator_path, info_guide) & _judge_identity(judge_path):
        raise ConfigError(f"classifier {file} guided the fine-tuning of generator {generator_path}; it cannot judge it")
    parent = judge_info["parent"]
    values = intervention.values[parent]
    if list(judge_info["values"]) != values or list(judge_info["image_size"]) != list(store.size):
        raise CheckpointError(
            f"judge {file} was trained on {parent} {judge_info['values']} at {judge_info['image_size']} px; "
            f"the store {store.path} has {values} at {list(store.size)}"
        )
    unseen = [values[v] for v in intervention.targets[parent] if v not in judge_info["trained_values"]]
    if unseen:
        raise CheckpointError(
            f"judge {file} never saw {values_noun(parent)} {', '.join(unseen)}; it cannot judge counterfactuals to them"
        )


def store_images(store: ImageStore, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Store rows as float images ``[B, 1, H, W]`` in [0, 1]."""
    return (torch.from_numpy(np.ascontiguousarray(store.images[rows])).float() / 255).unsqueeze(1).to(device)
