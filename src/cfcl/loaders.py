"""Training loaders positioned by the trainer's global step, so that a resumed run goes on exactly.

Every batch is a pure function of (seed, epoch, batch index, rank, world size): the epoch's order
comes from a generator seeded by ``(seed, epoch)``, and the sampler starts from the trainer's
global step. A run resumed from any checkpoint, mid-epoch included, therefore sees the very
batches the uninterrupted run would have seen, on one process or several (each rank takes its
own batches, so Lightning's distributed sampler must stay off: ``use_distributed_sampler=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cfcl.errors import CheckpointError, ConfigError

BatchKey = tuple[int, int, int, int]  # epoch, batch, rank, world size
Progress = Callable[[], tuple[int, int, int]]  # global step, rank, world size


class EpochBatches(Dataset):
    """Item ``(epoch, batch, rank, world)``: that batch of ``n`` items in the epoch's seeded order.

    A fresh permutation every epoch, or with ``weights`` ``n`` draws with replacement, item i with
    probability proportional to ``weights[i]``.
    ``drop_last`` keeps whole batches only; otherwise the last batch of an epoch may be short.
    ``items`` names them in errors (``"training images of STORE"``).
    Subclasses turn the item positions of a batch into the batch (:meth:`batch`).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        weights: np.ndarray | None = None,
        drop_last: bool = True,
        items: str = "training items",
    ):
        self.n, self.batch_size, self.seed, self.items, self.drop_last = n, batch_size, seed, items, drop_last
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self._order: tuple[int, np.ndarray] | None = None

    def batches_per_epoch(self, world: int) -> int:
        per_step = self.batch_size * world
        return self.n // per_step if self.drop_last else -(-self.n // per_step)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions ``0..n-1`` in the order epoch ``epoch`` visits them."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            if self.weights is not None:
                order = rng.choice(self.n, size=self.n, replace=True, p=self.weights)
            else:
                order = rng.permutation(self.n)
            self._order = (epoch, order)
        return self._order[1]

    def positions(self, key: BatchKey) -> np.ndarray:
        epoch, batch, rank, world = key
        start = (batch * world + rank) * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch(1)

    def __getitem__(self, key: BatchKey) -> Any:
        return self.batch(key, self.positions(key))

    def batch(self, key: BatchKey, positions: np.ndarray) -> Any:
        raise NotImplementedError


class DatasetBatches(EpochBatches):
    """Batches of a map-style dataset, collated as a ``DataLoader`` would collate its items."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, **order: Any):
        super().__init__(len(dataset), batch_size, seed, **order)
        self.dataset = dataset

    def batch(self, key: BatchKey, positions: np.ndarray) -> Any:
        return default_collate([self.dataset[int(i)] for i in positions])


class StepSampler(Sampler):
    """Keys of the batches still due in the current epoch, counted from the trainer's global step.

    ``progress()`` returns ``(global_step, rank, world_size)``; read when iteration starts, so a
    resumed run continues with the batch after the last completed step.
    """

    def __init__(self, batches: EpochBatches, progress: Progress):
        self.batches, self.progress = batches, progress

    def __len__(self) -> int:
        return self.batches.batches_per_epoch(self.progress()[2])

    def __iter__(self) -> Iterator[BatchKey]:
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


def ordered_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """The dataset in order (validation). Its own generator: starting it draws nothing from the global
    RNG, so training draws the same noise however often validation runs (a resumed run may run it again)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def trainer_progress(trainer) -> Progress:
    """``(global_step, rank, world_size)`` of a Lightning trainer, read when asked."""
    return lambda: (trainer.global_step, trainer.global_rank, trainer.world_size)


def step_loader(batches: EpochBatches, progress: Progress, num_workers: int, pin_memory: bool = False) -> StepLoader:
    """A loader of whole batches (``batch_size=None``): one worker call per batch, no collation."""
    if batches.batches_per_epoch(progress()[2]) == 0:
        raise ConfigError(
            f"batch_size {batches.batch_size} x {progress()[2]} device(s) exceeds the {batches.n} {batches.items}"
        )
    return StepLoader(  # a generator of its own: starting an epoch draws nothing from the global RNG
        batches,
        sampler=StepSampler(batches, progress),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(batches.seed),
    )
