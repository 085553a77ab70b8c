"""``cfcl`` commands as a user types them: a subprocess runner, ``--set`` arguments, a tiny generator's overrides."""

import os
import subprocess
import sys
from pathlib import Path

from support.paths import REPO

RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_ID",
)
SRC = str(REPO / "src")  # the subprocesses import this checkout's cfcl


class Cfcl:
    """``python -m cfcl ARGS`` in a subprocess, its output in files (a full pipe would block it)."""

    def __init__(self, args, log: Path, env=None, cwd=None):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cfcl", *map(str, args)],
            cwd=cwd,
            stdout=open(f"{log}.out", "w"),
            stderr=open(f"{log}.err", "w"),
            env={**{k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}, "PYTHONPATH": SRC, **(env or {})},
        )

    def wait(self, timeout: float = 900) -> int:
        return self.process.wait(timeout)

    @property
    def out(self) -> str:
        return Path(f"{self.log}.out").read_text()

    @property
    def err(self) -> str:
        return Path(f"{self.log}.err").read_text()


# `cfcl cf train` overrides for a generator that trains in seconds.
TINY_GENERATOR = [
    "arch.widths=[8, 8, 16]",
    "arch.blocks=[1, 1, 1]",
    "arch.latent_channels=4",
    "arch.stochastic_max_res=8",
    "batch_size=16",
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "val_images=8",
    "grid_images=4",
]


def sets(items):
    """``--set ITEM`` for each item."""
    return [arg for item in items for arg in ("--set", item)]
