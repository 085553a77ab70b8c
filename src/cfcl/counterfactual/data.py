"""Images and parents of a store as a torch dataset for the generator's training loops."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from cfcl.counterfactual.parents import ParentSpec, parents_from_store
from cfcl.data.store import ImageStore
from cfcl.errors import StoreError
from cfcl.loaders import DatasetBatches


class ParentImageDataset(Dataset):
    """Items ``{"x": uint8 [1, H, W], <parent>: value, ...}`` of the store rows ``indices``, held in memory."""

    def __init__(self, store: ImageStore, indices: np.ndarray, specs: list[ParentSpec]):
        self.indices = np.asarray(indices)
        self.images = torch.from_numpy(np.ascontiguousarray(store.images[self.indices]))[:, None]
        self.parents = parents_from_store(store, self.indices, specs)
        self.domains = store.meta["domain"].to_numpy()[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.images[i], **{k: v[i] for k, v in self.parents.items()}}


def split_batch(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image batch as float [B, 1, H, W] in [0, 1], and the parents."""
    x = batch["x"].float() / 255.0
    return x, {k: v for k, v in batch.items() if k != "x"}


def split_indices(store: ImageStore, splits: list[str]) -> np.ndarray:
    indices = store.indices(splits)
    if len(indices) == 0:
        raise StoreError(f"image store {store.path} has no images in split(s) {', '.join(splits)}")
    return indices


def domain_balanced_weights(domains: np.ndarray) -> np.ndarray:
    """Sampling weight of each image: 1 / (number of images of its domain)."""
    _, inverse, counts = np.unique(domains, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def training_batches(dataset: ParentImageDataset, batch_size: int, seed: int, balanced: bool = False) -> DatasetBatches:
    """The generator's training batches, a fresh seeded order every epoch (for :func:`cfcl.loaders.step_loader`);
    ``balanced`` draws every domain equally often (with replacement)."""
    weights = domain_balanced_weights(dataset.domains) if balanced else None
    return DatasetBatches(dataset, batch_size, seed, weights=weights, drop_last=len(dataset) > batch_size)
