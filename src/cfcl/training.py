"""The one place that builds Lightning trainers, so every training loop behaves the same.

CPU by default and several GPUs or nodes unchanged (``devices``, ``num_nodes``, ``strategy``),
mixed precision on GPU, a checkpoint every epoch plus ``last.ckpt`` (also written on
interrupt), CSV and TensorBoard logs, a progress bar, and resume from ``last.ckpt``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, NonNegativeInt

from cfcl.config import StrictModel

if TYPE_CHECKING:
    import torch

# cfcl chooses the checkpoint a stage resumes from (``Stage.resume_from``); with the interrupt
# checkpoint present, Lightning turns ``ckpt_path=None`` into a search for "last" and warns twice
# on every fresh start that it found none.
warnings.filterwarnings("ignore", message=r"`\.fit\(ckpt_path=None\)` was called without a model")
warnings.filterwarnings("ignore", message=r'\.fit\(ckpt_path="last"\) is set, but there is no last checkpoint')


class DevicesConfig(StrictModel):
    """Which devices and how many processes a command runs on (docs/architecture.md, "Several processes")."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)


class TrainerConfig(DevicesConfig):
    """Hardware and loop settings shared by every training stage."""

    strategy: str = "auto"
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "auto"] = "auto"
    max_epochs: int = Field(10, ge=1)
    max_steps: int = -1
    log_every_n_steps: int = Field(10, ge=1)
    gradient_clip_val: float | None = None
    progress_bar: bool = True
    num_workers: NonNegativeInt | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes per rank; auto: none on CPU, up to 8 per GPU on a CUDA machine"
    )
    sync_batchnorm: bool = Field(
        True, description="several GPUs: BatchNorm statistics over every rank's batch (on CPU each rank's own)"
    )


def uses_cuda(cfg: DevicesConfig) -> bool:
    """Whether these settings train on a CUDA GPU on this machine."""
    import torch

    return cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(cfg: TrainerConfig) -> str:
    """``auto``: bf16/16 mixed precision on a CUDA GPU, full precision on CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    import torch

    if uses_cuda(cfg):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def loader_workers(cfg: TrainerConfig) -> int:
    """DataLoader workers per rank: as set, else none on CPU (no start-up cost, one process as
    before) and on a CUDA machine the CPU cores per local GPU, at most 8, so loading overlaps the GPU."""
    if cfg.num_workers != "auto":
        return cfg.num_workers
    if not uses_cuda(cfg):
        return 0
    import torch

    per_node = torch.cuda.device_count() if cfg.devices == "auto" else cfg.devices
    return max(1, min(8, (os.cpu_count() or 1) // max(1, per_node)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's CUDA GPU (``local_rank``) when there is one, else the CPU; for loops outside Lightning."""
    import torch

    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def single_device(cfg: TrainerConfig) -> TrainerConfig:
    """The same settings on one device: for loops that run on rank 0 alone (evaluation)."""
    return cfg.model_copy(update={"devices": 1, "num_nodes": 1, "strategy": "auto"})


def last_checkpoint(out: str | os.PathLike) -> Path | None:
    """The checkpoint a killed run resumes from, if one was written."""
    path = Path(out) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def _interrupt_checkpoint(dirpath: Path):
    """Lightning's ``OnExceptionCheckpoint`` writing ``last.ckpt`` and, unlike the original, keeping
    it at teardown: it is the point an interrupted run resumes from."""
    from lightning.pytorch.callbacks import OnExceptionCheckpoint

    class KeptOnExceptionCheckpoint(OnExceptionCheckpoint):
        def teardown(self, *args, **kwargs) -> None:
            pass

    return KeptOnExceptionCheckpoint(dirpath, filename="last")


def make_trainer(cfg: TrainerConfig, out: str | os.PathLike, callbacks: list | None = None, **overrides):
    """A Lightning ``Trainer`` writing checkpoints and logs under ``out``."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    out = Path(out)
    cuda = uses_cuda(cfg)
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for the float32 parts (CPU unchanged)
    # On a GPU the progress bar reads its values at logging steps only: a read every step syncs the host.
    progress = [TQDMProgressBar(refresh_rate=cfg.log_every_n_steps)] if cuda and cfg.progress_bar else []
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False,
        save_last=True, save_top_k=-1, every_n_epochs=1,
    )
    loggers = [
        CSVLogger(out, name="logs", version=""),
        TensorBoardLogger(out, name="tensorboard", version="", default_hp_metric=False),
    ]
    kwargs = dict(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        sync_batchnorm=cfg.sync_batchnorm and cuda,
        precision=resolve_precision(cfg),
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps,
        log_every_n_steps=cfg.log_every_n_steps,
        gradient_clip_val=cfg.gradient_clip_val,
        enable_progress_bar=cfg.progress_bar,
        callbacks=[checkpoint, _interrupt_checkpoint(out / "checkpoints"), *progress, *(callbacks or [])],
        logger=loggers,
        default_root_dir=out,
        enable_model_summary=False,
        deterministic="warn",
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
