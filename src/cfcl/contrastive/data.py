"""Pretraining batches from image stores: uint8 views chosen by :func:`plan_views`.

Every batch is a pure function of (seed, epoch, batch index, rank, world size): the epoch's
order and the pairing draws come from generators seeded by those numbers. The sampler starts
from the trainer's global step, so a resumed run sees exactly the batches the interrupted
run would have seen. Images stay uint8 until the batch reaches the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cfcl.contrastive.pairing import CF_METHODS, GENERATOR_METHODS, ORACLE_METHODS, intervened_parents, plan_views, store_variant
from cfcl.data.store import ImageStore
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.layout import true_cf


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


def default_cf_store(method: str, data: str | Path) -> Path | None:
    """The oracles' counterfactuals are the synthetic benchmark's true ones, ``DATA/true_cf`` (sex: ``DATA/true_cf_sex``,
    ``oracle-renoised``: ``DATA/true_cf_renoised``); ``oracle-recon``'s store is made by a generator, so it has none."""
    if method not in ORACLE_METHODS or method in GENERATOR_METHODS:
        return None
    return true_cf(data, intervened_parents(method), store_variant(method))


def open_pretrain_data(method: str, data: str | Path, cf_store: str | Path | None, split: str = "train") -> PretrainData:
    """Open and cross-check the stores before any training starts."""
    store = ImageStore.open(data)
    if store.kind != "images":
        raise StoreError(f"data {store.path} is a {store.kind} store; pretraining reads an image store")
    sources = store.indices(split)
    if len(sources) == 0:
        raise StoreError(f"data {store.path} has no images in split '{split}'")
    if method not in CF_METHODS:
        return PretrainData(store, None, sources, None, store.id_domains, store.meta["domain"].to_numpy())
    if method in ORACLE_METHODS and not store.info.get("synthetic"):
        raise ConfigError(f"method {method!r} needs true counterfactuals, which only the synthetic benchmark has; {store.path} is not synthetic")
    if cf_store is None:
        raise ConfigError(f"method {method!r} needs a counterfactual store: set cf_store (--cf-store STORE)")
    cf = ImageStore.open(cf_store)
    table = cf.intervention_table(store, intervened_parents(method), f"cf_store of method {method!r}:")
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


class ViewBatches(Dataset):
    """Item ``(epoch, batch, rank, world)``: that batch's views (uint8), groups and source labels."""

    def __init__(
        self, data: PretrainData, method: str, batch_size: int, seed: int, p_replace: float, p_cf: float, n_cf_views: int,
        n_local: int = 0,
    ):
        self.data, self.method, self.batch_size, self.seed = data, method, batch_size, seed
        self.pairing = dict(p_replace=p_replace, p_cf=p_cf, n_cf_views=n_cf_views, n_local=n_local)
        self.labels = data.data.meta["label"].to_numpy()
        self._order: tuple[int, np.ndarray] | None = None

    def batches_per_epoch(self, world: int) -> int:
        return len(self.data.sources) // (self.batch_size * world)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.data.sources))
        return self._order[1]

    def __len__(self) -> int:
        return self.batches_per_epoch(1)

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
        epoch, batch, rank, world = key
        start = (batch * world + rank) * self.batch_size
        sources = self._epoch_order(epoch)[start : start + self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, batch, rank, 1])
        plan = plan_views(self.method, sources, self.data.cells[sources], self.data.cf_table, self.data.targets, rng, **self.pairing)
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


class StepSampler(Sampler):
    """Keys of the batches still due in the current epoch, counted from the trainer's global step.

    ``progress()`` returns ``(global_step, rank, world_size)``; read when iteration starts, so a
    resumed run continues with the batch after the last completed step.
    """

    def __init__(self, batches: ViewBatches, progress: Callable[[], tuple[int, int, int]]):
        self.batches, self.progress = batches, progress

    def __len__(self) -> int:
        return self.batches.batches_per_epoch(self.progress()[2])

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        step, rank, world = self.progress()
        per_epoch = self.batches.batches_per_epoch(world)
        epoch, first = divmod(step, per_epoch)
        for batch in range(first, per_epoch):
            yield epoch, batch, rank, world


class StepLoader(DataLoader):
    """Positioned by the trainer's global step (:class:`StepSampler`); its state only checks the layout.

    Lightning saves the state with each checkpoint; a resume with another batch layout (batch
    size, number of processes) could not continue the same sequence of batches, so it is refused.
    """

    def state_dict(self) -> dict[str, int]:
        world = self.sampler.progress()[2]
        return {"world_size": world, "batches_per_epoch": self.dataset.batches_per_epoch(world)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state != self.state_dict():
            raise CheckpointError(
                f"the checkpoint was written with {state['batches_per_epoch']} batches per epoch on "
                f"{state['world_size']} process(es), this run has {self.state_dict()}; resume with the same layout"
            )


def step_loader(batches: ViewBatches, progress: Callable[[], tuple[int, int, int]], num_workers: int, pin_memory: bool) -> StepLoader:
    """A loader of whole batches (``batch_size=None``): one worker call per batch, no collation."""
    if batches.batches_per_epoch(progress()[2]) == 0:
        raise ConfigError(
            f"batch_size {batches.batch_size} x {progress()[2]} device(s) exceeds the "
            f"{len(batches.data.sources)} training images of {batches.data.data.path}"
        )
    return StepLoader(
        batches, sampler=StepSampler(batches, progress), batch_size=None, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=False,
    )
