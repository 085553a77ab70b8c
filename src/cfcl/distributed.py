"""Several processes, one run: which rank this process is, starting the local ranks, and keeping
the ranks in step between stages (docs/architecture.md, "Several processes").

Training stages run on every rank (Lightning DDP over the process group made here), the
counterfactual store is generated in chunks shared by every rank and evaluation's frozen features
in one shard of rows per rank; every other stage, and every write of a stage folder, happens on
global rank 0 while the other ranks wait.
Ranks come from one of two places:

- ``trainer.devices > 1`` on one machine, no launcher: the first process becomes rank 0 and
  starts one copy of the same command per further device, with the rank in its environment
  (as ``torchrun`` would), before any stage runs;
- a cluster launcher that starts one process per device and sets the rank in the environment:
  ``srun`` (SLURM) or ``torchrun``, or any launcher setting ``RANK``/``LOCAL_RANK``,
  ``NODE_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. ``num_nodes > 1`` needs one.

Every rank walks the same plan. Before each stage rank 0 says what to do with it; after it, the
ranks meet. A rank that fails or dies stops at once (rank 0 first closes the process group), which
breaks the others' next collective: every rank then ends with a one-line error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cfcl.errors import CfclError, ConfigError
from cfcl.training import DevicesConfig, uses_cuda

#: Waiting for rank 0 may take as long as its longest stage without a training loop.
WAIT_TIMEOUT = timedelta(hours=48)
#: How long rank 0, when it fails, gives the other ranks to stop on their own.
STOP_GRACE_S = 60.0


class RankError(CfclError):
    """Another rank failed or stopped; this rank stops too."""


def _is_peer_failure(exc: BaseException) -> bool:
    """A collective failed because another rank went away (gloo and NCCL raise plain RuntimeErrors)."""
    from torch import distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        k in text for k in ("gloo", "NCCL", "Connection reset", "Connection closed")
    )


def _stopped(rank: int, what: str, exc: BaseException) -> RankError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return RankError(f"rank {rank}: another rank stopped while this one {what} (its own error says why): {first}")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    node_rank: int = 0

    @property
    def is_writer(self) -> bool:
        """Only global rank 0 writes stage folders, manifests and stores."""
        return self.rank == 0


def rank_rows(n: int, rank: int, world_size: int, unit: int = 1) -> range:
    """Rank ``rank``'s contiguous share of ``n`` rows, in whole ``unit``s (a batch): the shares of
    ranks 0..world_size-1 follow each other and cover every row once; a rank with no unit left gets none."""
    units = -(-n // unit)
    first, last = units * rank // world_size, units * (rank + 1) // world_size
    return range(min(n, first * unit), min(n, last * unit))


def planned_world_size(trainer: DevicesConfig) -> int:
    """Processes the trainer settings ask for: devices per node x nodes (``auto``: every GPU, or 1)."""
    devices = trainer.devices
    if devices == "auto":
        import torch

        devices = max(1, torch.cuda.device_count()) if uses_cuda(trainer) else 1
    return devices * trainer.num_nodes


def check_machine(trainer: DevicesConfig) -> None:
    """Refuse, before anything is written, settings this machine cannot run: a GPU where there is
    none, bf16 on a GPU without it, or more devices on this node than it has."""
    import torch

    wants_gpu = trainer.accelerator in ("gpu", "cuda")
    gpus = torch.cuda.device_count()
    if wants_gpu and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator} but this machine has no CUDA GPU; use trainer.accelerator=cpu "
            "or auto"
        )
    precision = getattr(trainer, "precision", None)
    if precision == "bf16-mixed" and uses_cuda(trainer) and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision=bf16-mixed but this machine's GPU ({torch.cuda.get_device_name()}) has no bfloat16 "
            "support; use trainer.precision=16-mixed or auto"
        )
    if trainer.devices == "auto":
        return
    if uses_cuda(trainer) and trainer.devices > gpus:
        raise ConfigError(f"trainer.devices={trainer.devices} but this machine has {gpus} CUDA GPU(s)")
    if not uses_cuda(trainer) and trainer.devices > (os.cpu_count() or 1):
        raise ConfigError(
            f"trainer.devices={trainer.devices} CPU processes but this machine has {os.cpu_count()} CPU core(s)"
        )


def ranks_from_environment(trainer: DevicesConfig) -> Ranks | None:
    """The ranks a cluster launcher (or cfcl's own start of the local ranks) put in the environment,
    found as Lightning finds them (SLURM, then torchrun, then ``LOCAL_RANK``), or None."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    env = os.environ
    for cluster in (SLURMEnvironment, TorchElasticEnvironment):
        if cluster.detect():
            found = cluster()
            return Ranks(found.global_rank(), found.world_size(), found.local_rank(), found.node_rank())
    if "LOCAL_RANK" not in env:
        return None
    local, node = int(env["LOCAL_RANK"]), int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
    per_node = planned_world_size(trainer) // trainer.num_nodes
    return Ranks(node * per_node + local, planned_world_size(trainer), local, node)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ranks(world_size: int, argv: Sequence[str]) -> list[subprocess.Popen]:
    """Start ranks 1..world_size-1 on this machine as copies of ``cfcl ARGV``; this process becomes rank 0."""
    shared = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "NODE_RANK": "0",
        "WORLD_SIZE": str(world_size),
    }
    command = [sys.executable, "-m", "cfcl", *argv]
    children = [
        subprocess.Popen(command, env={**os.environ, **shared, "LOCAL_RANK": str(r), "RANK": str(r)})
        for r in range(1, world_size)
    ]
    os.environ.update(shared, LOCAL_RANK="0", RANK="0")
    return children


def _backend(trainer: DevicesConfig) -> str:
    return "nccl" if uses_cuda(trainer) else "gloo"


class Coordinator:
    """Keeps the ranks of one run in step; on one process every call is free."""

    def __init__(self, ranks: Ranks, group: Any = None):
        self.ranks, self.group = ranks, group

    @classmethod
    def single(cls) -> Coordinator:
        return cls(Ranks())

    def _collective(self, what: str, call):
        try:
            return call()
        except RuntimeError as exc:
            if _is_peer_failure(exc):
                raise _stopped(self.ranks.rank, what, exc) from None
            raise

    def agree(self, value: Any, what: str) -> Any:
        """Rank 0's ``value`` on every rank (what to do with the next stage)."""
        if self.ranks.world_size == 1:
            return value
        from torch import distributed as dist

        box = [value]
        self._collective(
            f"waited for rank 0 ({what})", lambda: dist.broadcast_object_list(box, src=0, group=self.group)
        )
        return box[0]

    def barrier(self, what: str) -> None:
        """Wait until every rank is past ``what``."""
        if self.ranks.world_size == 1:
            return
        from torch import distributed as dist

        self._collective(f"waited at the end of {what}", lambda: dist.barrier(group=self.group))


_current = Coordinator.single()


def current() -> Coordinator:
    """The coordinator of the command running in this process (one process outside :func:`session`)."""
    return _current


def is_writer() -> bool:
    """Whether this process is global rank 0 (or the only process)."""
    from torch import distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@contextmanager
def session(trainer: DevicesConfig, argv: Sequence[str]) -> Iterator[Coordinator]:
    """The ranks of one command: checks the machine, starts the local ranks or joins the cluster's,
    makes the process group Lightning then trains over, and on rank 0 waits for the others at the end."""
    global _current
    check_machine(trainer)
    world = planned_world_size(trainer)
    ranks = ranks_from_environment(trainer)
    children: list[subprocess.Popen] = []
    if ranks is None:
        if trainer.num_nodes > 1:
            raise ConfigError(
                f"trainer.num_nodes={trainer.num_nodes} needs a cluster launcher that starts one process per device "
                "and sets its rank (srun, or torchrun with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); none was found"
            )
        if world == 1:
            yield _current
            return
        children = start_local_ranks(world, argv)
        ranks = Ranks(0, world, 0, 0)
    elif ranks.world_size != world:
        raise ConfigError(
            f"trainer.devices x trainer.num_nodes = {world} but the launcher started {ranks.world_size} processes"
        )
    from torch import distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(_backend(trainer), init_method="env://", rank=ranks.rank, world_size=ranks.world_size)
    _current = Coordinator(ranks, dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT))
    failed = True
    try:
        yield _current
        failed = False
    except RuntimeError as exc:
        if _is_peer_failure(exc):
            raise _stopped(ranks.rank, "trained", exc) from None
        raise
    finally:
        _current = Coordinator.single()
        if failed:
            dist.destroy_process_group()  # the ranks waiting for this one fail now, not at a timeout
        _wait_for(children, grace=STOP_GRACE_S if failed else None)


def _wait_for(children: list[subprocess.Popen], grace: float | None) -> None:
    """Rank 0 waits for the local ranks it started; after a failure only ``grace`` seconds, then stops them."""
    deadline = None if grace is None else time.time() + grace
    for child in children:
        try:
            child.wait(None if deadline is None else max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    bad = [c for c in children if c.returncode not in (0, None)]
    if grace is None and bad:
        raise RankError(f"rank {children.index(bad[0]) + 1} exited with code {bad[0].returncode}")


def run_on_ranks(runner, config: Any, out: Any, force: bool, argv: Sequence[str]) -> None:
    """One stage command on the ranks its ``trainer`` settings ask for (one process without them)."""
    trainer = getattr(config, "trainer", None)
    with session(trainer if isinstance(trainer, DevicesConfig) else DevicesConfig(), argv):
        runner(config, out=out, force=force)
