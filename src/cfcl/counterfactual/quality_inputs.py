"""What ``cfcl cf evaluate`` measures: a generator (a model or a counterfactual store) and a judge.

A counterfactual store is looked up by source image and target domain; the true counterfactual
store is the perfect generator. The judge must never be the classifier that guided fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cfcl.counterfactual.classifier import classifier_file
from cfcl.counterfactual.generator import generator_file, load_generator
from cfcl.counterfactual.inference import counterfactual
from cfcl.counterfactual.parents import parents_from_store
from cfcl.counterfactual.quality import Parents
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.stage import fingerprint, read_manifest

CounterfactualFn = Callable[[torch.Tensor, Parents, Parents], torch.Tensor]


@dataclass
class Generator:
    """What evaluation needs of a generator: its counterfactual function, parents, domains and provenance."""

    cf_fn: CounterfactualFn
    parents: Callable[[np.ndarray], Parents]
    seen_domains: list[int]
    cycles: bool  # composition and reversibility measurable (a store needs every image's own-domain row)
    info: dict[str, Any]
    source: Path  # the file that identifies it (checkpoint or store.json), fingerprinted as a stage input


class TableCounterfactuals:
    """A counterfactual store as a generator: ``pa["row"]`` names the source image, ``pa_star["domain"]`` the target."""

    def __init__(self, cf_store: ImageStore, table: np.ndarray):
        self.cf_store, self.table = cf_store, table

    def __call__(self, x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
        rows = self.table[pa["row"].cpu().numpy(), pa_star["domain"].cpu().numpy()]
        if (rows < 0).any():
            raise StoreError(f"counterfactual store {self.cf_store.path} lacks some (image, target domain) pairs")
        return store_images(self.cf_store, rows, x.device)


def _model_generator(path: Path, store: ImageStore, device: torch.device) -> Generator:
    model, info = load_generator(path)
    if tuple(store.size) != (info["image_size"], info["image_size"]):
        raise CheckpointError(
            f"generator {generator_file(path)} makes {info['image_size']} px images, "
            f"the store {store.path} holds {store.size}"
        )
    model = model.to(device)
    domain = next((s for s in model.specs if s.name == "domain"), None)
    if domain is None:
        raise CheckpointError(f"generator {generator_file(path)} has no 'domain' parent; it cannot change the scanner")

    def cf_fn(x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
        return counterfactual(model, x, pa, pa_star)

    def parents(indices: np.ndarray) -> Parents:
        return parents_from_store(store, indices, model.specs)

    provenance = {"kind": "model", "path": str(generator_file(path)), "guide": info.get("guide")}
    return Generator(cf_fn, parents, list(domain.seen), True, provenance, generator_file(path))


def _table_generator(path: Path, store: ImageStore) -> Generator:
    cf_store = ImageStore.open(path)
    cf_store.require_counterfactuals_of(store)
    table = cf_store.counterfactual_table(len(store), len(store.domains))
    domains = store.meta["domain"].to_numpy()
    present = table >= 0
    seen = [d for d in range(len(store.domains)) if present[:, d].any()]
    own = present[np.arange(len(store)), domains]

    def parents(indices: np.ndarray) -> Parents:
        return {
            "domain": torch.as_tensor(domains[indices], dtype=torch.long),
            "row": torch.as_tensor(indices, dtype=torch.long),
        }

    provenance = {"kind": "counterfactual_store", "path": str(path)}
    return Generator(TableCounterfactuals(cf_store, table), parents, seen, bool(own.all()), provenance, path / INFO)


def load_any_generator(path: Path, store: ImageStore, device: torch.device) -> Generator:
    """A generator folder / checkpoint, or a counterfactual store."""
    if (path / INFO).is_file():
        return _table_generator(path, store)
    return _model_generator(path, store, device)


def _judge_identity(path: Path) -> set[str]:
    """Fingerprints under which a classifier can be recorded as an input: its file and its stage folder."""
    file = classifier_file(path)
    ids = {fingerprint(file)}
    manifest = read_manifest(file.parent)
    if manifest is not None and manifest.get("status") == "complete":
        ids.add(manifest["fingerprint"])
    return ids


def _recorded_guides(generator_path: Path, info_guide: Any) -> set[str]:
    """Guide fingerprints recorded by fine-tuning: the generator folder's manifest inputs and its checkpoint info."""
    folder = generator_path if generator_path.is_dir() else generator_path.parent
    recorded = [((read_manifest(folder) or {}).get("inputs") or {}).get("guide"), info_guide]
    return {r["fingerprint"] if isinstance(r, dict) else r for r in recorded if r}


def check_judge(
    judge_info: dict, judge_path: Path, generator_path: Path, info_guide: Any, store: ImageStore, domains: list[int]
) -> None:
    """The judge must be a judge, not the guide the generator was fine-tuned with, and know the store's domains."""
    file = classifier_file(judge_path)
    if judge_info["role"] != "judge":
        raise ConfigError(
            f"classifier {file} has role '{judge_info['role']}'; the judge never guides: train one with --config cf_judge"
        )
    if _recorded_guides(generator_path, info_guide) & _judge_identity(judge_path):
        raise ConfigError(f"classifier {file} guided the fine-tuning of generator {generator_path}; it cannot judge it")
    if list(judge_info["domains"]) != store.domains or list(judge_info["image_size"]) != list(store.size):
        raise CheckpointError(
            f"judge {file} was trained on domains {judge_info['domains']} at {judge_info['image_size']} px; "
            f"the store {store.path} has {store.domains} at {list(store.size)}"
        )
    unseen = [store.domains[d] for d in domains if d not in judge_info["trained_domains"]]
    if unseen:
        raise CheckpointError(
            f"judge {file} never saw domain(s) {', '.join(unseen)}; it cannot judge counterfactuals to them"
        )


def store_images(store: ImageStore, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Store rows as float images ``[B, 1, H, W]`` in [0, 1]."""
    return (torch.from_numpy(np.ascontiguousarray(store.images[rows])).float() / 255).unsqueeze(1).to(device)
