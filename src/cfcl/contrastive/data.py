"""Pretraining batches from image stores: uint8 views chosen by :func:`plan_views`.

Every batch is a pure function of (seed, epoch, batch index, rank, world size): the epoch's
order and the pairing draws come from generators seeded by those numbers, and the loader is
positioned by the trainer's global step (:mod:`cfcl.loaders`), so a resumed run sees exactly
the batches the interrupted run would have seen. Images stay uint8 until the batch reaches
the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cfcl.contrastive.methods import METHODS
from cfcl.contrastive.pairing import plan_views
from cfcl.data.store import ImageStore
from cfcl.errors import ConfigError, StoreError
from cfcl.loaders import BatchKey, EpochBatches


@dataclass
class PretrainData:
    """The ID training images, their counterfactuals and the cells counterfactuals may target
    (:mod:`cfcl.contrastive.pairing`: with the scanner intervened on, a cell is a domain)."""

    data: ImageStore
    cf: ImageStore | None
    sources: np.ndarray
    cf_table: np.ndarray | None
    targets: list[int]
    cells: np.ndarray  # every data-store image's own cell

    @property
    def image_size(self) -> tuple[int, int]:
        return self.data.size


def open_pretrain_data(
    method: str, data: str | Path, cf_store: str | Path | None, split: str = "train"
) -> PretrainData:
    """Open and cross-check the stores before any training starts."""
    store = ImageStore.open(data)
    if store.kind != "images":
        raise StoreError(f"data {store.path} is a {store.kind} store; pretraining reads an image store")
    sources = store.indices(split)
    if len(sources) == 0:
        raise StoreError(f"data {store.path} has no images in split '{split}'")
    spec = METHODS[method]
    if not spec.uses_counterfactuals:
        return PretrainData(store, None, sources, None, store.id_domains, store.meta["domain"].to_numpy())
    if spec.cf_source == "true" and not store.info.get("synthetic"):
        raise ConfigError(
            f"method {method!r} needs true counterfactuals, which only the synthetic benchmark has; {store.path} is "
            "not synthetic"
        )
    if cf_store is None:
        raise ConfigError(f"method {method!r} needs a counterfactual store: set cf_store (--cf-store STORE)")
    cf = ImageStore.open(cf_store)
    table = cf.intervention_table(store, spec.parents, f"cf_store of method {method!r}:")
    return PretrainData(store, cf, sources, table, target_cells(cf, store), cf.source_cells(store))


def target_cells(cf: ImageStore, store: ImageStore) -> list[int]:
    """The cells counterfactuals may target: every combination whose domain (if intervened on) is in-distribution."""
    shape = cf.cell_shape(len(store.domains))
    values = np.unravel_index(np.arange(int(np.prod(shape))), shape)
    allowed = np.ones(len(values[0]), dtype=bool)
    for parent, codes in zip(cf.intervened, values):
        if parent == "domain":
            allowed &= np.isin(codes, store.id_domains)
    return np.flatnonzero(allowed).tolist()


class ViewBatches(EpochBatches):
    """Item ``(epoch, batch, rank, world)``: that batch's views (uint8), groups and source labels."""

    def __init__(
        self,
        data: PretrainData,
        method: str,
        batch_size: int,
        seed: int,
        p_replace: float,
        p_cf: float,
        n_cf_views: int,
        n_local: int = 0,
    ):
        super().__init__(len(data.sources), batch_size, seed, items=f"training images of {data.data.path}")
        self.data, self.method = data, method
        self.pairing = dict(p_replace=p_replace, p_cf=p_cf, n_cf_views=n_cf_views, n_local=n_local)
        self.labels = data.data.meta["label"].to_numpy()

    def batch(self, key: BatchKey, positions: np.ndarray) -> dict[str, torch.Tensor]:
        epoch, batch, rank, world = key
        sources = self.data.sources[positions]
        rng = np.random.default_rng([self.seed, epoch, batch, rank, 1])
        plan = plan_views(
            self.method, sources, self.data.cells[sources], self.data.cf_table, self.data.targets, rng, **self.pairing
        )
        h, w = self.data.image_size
        views = np.empty((len(plan.rows), h, w), dtype=np.uint8)
        for is_cf, store in ((False, self.data.data), (True, self.data.cf)):
            where = np.flatnonzero(plan.from_cf == is_cf)
            if len(where):
                order = np.argsort(plan.rows[where], kind="stable")  # sequential reads of the memory map
                views[where[order]] = store.images[plan.rows[where][order]]
        return {
            "views": torch.from_numpy(views).unsqueeze(1),
            "groups": torch.from_numpy(plan.groups),
            "labels": torch.from_numpy(self.labels[sources]),
        }
