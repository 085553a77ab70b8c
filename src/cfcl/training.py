"""The one place that builds Lightning trainers, so every training loop behaves the same.

CPU by default and several GPUs or nodes unchanged (``devices``, ``num_nodes``, ``strategy``),
mixed precision on GPU, CSV and TensorBoard logs, a progress bar, and resume that never goes
back: one resume point, ``checkpoints/last.ckpt``, replaced atomically at every epoch's end and
on Ctrl-C, holding the RNG states, so a resumed run goes on as the uninterrupted one would have
(docs/architecture.md, "Resume").
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from cfcl import atomic
from cfcl.config import StrictModel

if TYPE_CHECKING:
    import torch

# cfcl chooses the checkpoint a stage resumes from (``Stage.resume_from``); with the interrupt
# checkpoint present, Lightning turns ``ckpt_path=None`` into a search for "last" and warns twice
# on every fresh start that it found none.
warnings.filterwarnings("ignore", message=r"`\.fit\(ckpt_path=None\)` was called without a model")
warnings.filterwarnings("ignore", message=r'\.fit\(ckpt_path="last"\) is set, but there is no last checkpoint')
# Lightning's lines that say nothing about the user's run (which devices exist, the seed of every stage,
# an advertisement, its Ctrl-C notice: cfcl says in one line how to resume, :func:`fit`); its warnings
# about the run stay.
LIGHTNING_CHATTER = re.compile(
    r"(GPU|TPU) available: |Seed set to \d+|"
    r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]"
    r"|\s*Detected KeyboardInterrupt"
)
for _name in (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
):
    logging.getLogger(_name).addFilter(lambda record: not LIGHTNING_CHATTER.match(record.getMessage()))


#: The package each optional logger of ``trainer.loggers`` imports (installed by the extra of the logger's name).
LOGGER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}
#: The W&B and MLflow runs a training folder logs into, by logger name; under ``logs/``, so a fresh start clears it.
LOGGER_RUNS = Path("logs") / "logger_runs.json"


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
    keep_every_n_epochs: PositiveInt | None = Field(
        None,
        description="also keep checkpoints/epochNNN.ckpt every N epochs; default: only last.ckpt, the resume point",
    )
    loggers: list[Literal["csv", "tensorboard", "wandb", "mlflow"]] = Field(
        ["csv", "tensorboard"],
        description="where the curves go, all under the stage folder: "
        "csv (logs/metrics.csv, always kept: the report reads it), "
        "tensorboard, wandb (offline unless WANDB_MODE says otherwise), mlflow (a file store, mlruns/)",
    )

    #: Where the curves go, which checkpoints are kept and whether a progress bar shows do not change what the
    #: stage computes: a run rerun with another of them is up to date.
    unhashed = frozenset({"loggers", "keep_every_n_epochs", "progress_bar"})

    @field_validator("loggers")
    @classmethod
    def _installed_loggers(cls, loggers: list[str]) -> list[str]:
        """csv first (cfcl reads it), each logger once; a logger whose package is missing is refused
        before the stage writes anything."""
        for name in loggers:
            package = LOGGER_PACKAGES.get(name)
            if package is not None and find_spec(package) is None:
                raise ValueError(f"logger '{name}' needs the {package} package: pip install 'cfcl[{name}]'")
        return list(dict.fromkeys(["csv", *loggers]))


def busy_cores(seconds: float = 0.2) -> float | None:
    """How many CPU cores other processes keep busy, averaged over ``seconds`` (``/proc/stat``; None elsewhere)."""

    def times() -> list[int]:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]

    try:
        before = times()
        time.sleep(seconds)
        after = times()
    except OSError:
        return None
    delta = [b - a for a, b in zip(before, after)]
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle and iowait
    return (os.cpu_count() or 1) * (1 - idle / max(1, sum(delta)))


def share_busy_cpus() -> None:
    """Before torch loads OpenMP: where other processes keep at least half a core busy, OpenMP's idle
    threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), so two jobs on the same cores do
    not burn each other's time; alone spinning is faster, so nothing changes. The thread count stays
    (it would change the results' last bits); a policy the user set is kept (benchmarks/cpu_share.py)."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return
    busy = busy_cores()
    if busy is not None and busy >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


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
    """``auto``: this process's CUDA GPU (``local_rank``) when there is one, else the CPU; for loops outside
    Lightning."""
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
    it at teardown: it is the point an interrupted run resumes from.

    A stop inside an epoch's validation writes nothing: Lightning cannot resume a validation, so that
    state would resume as an epoch without its metrics (early stopping then fails for want of its
    metric). The run resumes from the previous epoch's end instead and repeats the epoch."""
    from lightning.pytorch.callbacks import OnExceptionCheckpoint

    class KeptOnExceptionCheckpoint(OnExceptionCheckpoint):
        def on_exception(self, trainer, *args, **kwargs) -> None:
            if trainer.validating or trainer.sanity_checking:
                return
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)

        def teardown(self, *args, **kwargs) -> None:
            pass

    return KeptOnExceptionCheckpoint(dirpath, filename="last")


def _atomic_checkpoint_io():
    """Lightning's checkpoint writer, writing beside the target and renaming: a process killed while
    it writes leaves the previous checkpoint whole."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            path = Path(path)
            partial = path.with_name(f".{path.name}.partial")
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)

    return AtomicCheckpointIO()


def _rng_states() -> dict:
    import torch

    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _rng_state_callback():
    """Saves the global torch RNG states with every checkpoint and sets them again on resume, so that
    a resumed run draws the noise an uninterrupted one would (the HVAE's reparameterisation, dropout).

    A checkpoint written inside a step (on Ctrl-C) holds the states from that step's start, the
    point the resumed run repeats the step from. Validation leaves the states as it found them, so
    training draws the same noise whether or not (and how often, after a resume) validation ran.
    """
    from lightning.pytorch.callbacks import Callback

    class RngStates(Callback):
        def __init__(self):
            self.step_start: tuple[int, dict] | None = None
            self.validation_start: dict | None = None

        def on_train_batch_start(self, trainer, *args) -> None:
            self.step_start = (trainer.global_step, _rng_states())

        def on_train_batch_end(self, trainer, *args) -> None:
            self.step_start = None

        def on_validation_start(self, trainer, module) -> None:
            self.validation_start = _rng_states()

        def on_validation_end(self, trainer, module) -> None:
            _set_rng_states(self.validation_start)
            self.validation_start = None

        def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
            if self.step_start is not None and self.step_start[0] == trainer.global_step:
                checkpoint["rng_states"] = self.step_start[1]
            else:
                checkpoint["rng_states"] = self.validation_start or _rng_states()

        def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
            if "rng_states" in checkpoint:
                _set_rng_states(checkpoint["rng_states"])

    return RngStates()


def _csv_logger(out: Path):
    """Lightning's CSV logger, which on resume keeps the rows logged up to the checkpoint's step
    (Lightning's own deletes the file, and with it the curve before the interruption), with the
    callback that trims them, says where the run resumed and flushes the rows with every checkpoint."""
    import pandas as pd
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from lightning.pytorch.loggers.logger import rank_zero_experiment

    class ResumedExperimentWriter(ExperimentWriter):
        """Replaces the whole file at every flush, so an interruption mid-write leaves the previous one."""

        def _check_log_dir_exists(self) -> None:
            pass

        def _rows(self) -> pd.DataFrame:
            return pd.read_csv(self.metrics_file_path) if os.path.isfile(self.metrics_file_path) else pd.DataFrame()

        def _write(self, rows: pd.DataFrame) -> None:
            atomic.write_text(self.metrics_file_path, rows[sorted(rows.columns)].to_csv(index=False))

        def save(self) -> None:
            if self.metrics:
                self._write(
                    pd.concat([f for f in (self._rows(), pd.DataFrame(self.metrics)) if len(f)], ignore_index=True)
                )
                self.metrics = []

        def keep_before(self, step: int) -> None:
            """Drop the rows of steps from ``step`` on: the resumed run logs them again."""
            rows = self._rows()
            if len(rows):
                self._write(rows[rows["step"] < step])

    class ResumedCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = ResumedExperimentWriter(log_dir=self.log_dir)
            return self._experiment

    class ResumeLog(Callback):
        def __init__(self):
            self.resumed = False

        def on_train_start(self, trainer, module) -> None:
            self.resumed = trainer.ckpt_path is not None
            if not (self.resumed and trainer.is_global_zero):
                return
            print(
                f"resumed from {trainer.ckpt_path}: epoch {trainer.current_epoch}, step {trainer.global_step}",
                flush=True,
            )
            for logger in trainer.loggers:
                if isinstance(logger, ResumedCSVLogger):
                    logger.experiment.keep_before(trainer.global_step)

        def on_train_batch_start(self, trainer, *args) -> None:
            if self.resumed:
                # Lightning's logging step after a restore is off by one, one way or the other, depending on
                # where the checkpoint was written; cfcl's loops take one optimiser step per batch, so the
                # logging step of an uninterrupted run equals the global step.
                trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
                self.resumed = False

        def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
            for logger in trainer.loggers:
                if isinstance(logger, ResumedCSVLogger):
                    logger.save()

    return ResumedCSVLogger(out, name="logs", version=""), ResumeLog()


def _logger(name: str, out: Path, run_id: str | None):
    """The logger ``name`` of ``trainer.loggers`` beside the CSV one, writing under ``out`` and needing no
    network or login: W&B offline (``wandb sync`` uploads it later) unless ``WANDB_MODE`` says otherwise,
    MLflow to a file store. ``run_id``: the W&B or MLflow run to go on in (None: a new one)."""
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(out, name="tensorboard", version="", default_hp_metric=False)
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        # mode, not offline=True: Lightning's offline flag sets WANDB_MODE for the rest of the process
        mode = os.environ.get("WANDB_MODE", "offline")
        return WandbLogger(save_dir=out, project="cfcl", name=out.name, mode=mode, id=run_id, resume="allow")
    from lightning.pytorch.loggers import MLFlowLogger

    # MLflow 3 keeps the file store (the one that needs no database packages) behind this opt-in
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(
        experiment_name="cfcl", run_name=out.name, tracking_uri=f"file:{out.resolve()}/mlruns", run_id=run_id
    )


def _resumed_logger_runs(out: Path) -> dict[str, str]:
    """The W&B and MLflow run ids recorded in ``out`` when its training resumes from ``last.ckpt``, so
    that it logs on into the same runs; empty when it starts afresh."""
    path = out / LOGGER_RUNS
    if last_checkpoint(out) is None or not path.is_file():
        return {}
    return json.loads(path.read_text())


def _logger_runs_callback(out: Path, recorded: dict[str, str]):
    """Records the runs of the W&B and MLflow loggers in ``out`` (rank 0, atomically) as soon as they
    exist: Lightning makes them before any callback's ``setup``."""
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    class LoggerRuns(Callback):
        def setup(self, trainer, module, stage) -> None:
            if not trainer.is_global_zero:
                return
            runs = dict(recorded)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    runs["wandb"] = logger.experiment.id
                elif isinstance(logger, MLFlowLogger):
                    runs["mlflow"] = logger.run_id
            if runs != recorded:
                atomic.write_json(out / LOGGER_RUNS, runs)

    return LoggerRuns()


def _step_end_stop():
    """The first Ctrl-C stops training where the state is whole, before the next step starts (the
    step's optimiser update, EMA and RNG draws all done); a second one stops at once."""
    from lightning.pytorch.callbacks import Callback

    class StepEndStop(Callback):
        def __init__(self):
            self.requested = False
            self.previous = None

        def _on_sigint(self, signum, frame) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("cfcl: stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

        def on_fit_start(self, trainer, module) -> None:
            if threading.current_thread() is threading.main_thread():
                self.previous = signal.signal(signal.SIGINT, self._on_sigint)

        def on_train_batch_start(self, trainer, *args) -> None:
            if self.requested:
                raise KeyboardInterrupt

        def teardown(self, trainer, module, stage) -> None:
            if self.previous is not None:
                signal.signal(signal.SIGINT, self.previous)
                self.previous = None

    return StepEndStop()


def fit(trainer, module, *loaders, ckpt_path: str | os.PathLike | None) -> None:
    """``trainer.fit`` from ``ckpt_path``; Ctrl-C (Lightning writes ``last.ckpt`` and exits) reaches the
    caller as ``KeyboardInterrupt``, so the command says how to resume and exits 130."""
    try:
        trainer.fit(module, *loaders, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def make_trainer(cfg: TrainerConfig, out: str | os.PathLike, callbacks: list | None = None, **overrides):
    """A Lightning ``Trainer`` writing checkpoints and logs under ``out``."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

    # A deprecation that torch raises inside Lightning itself, nothing the user can act on; set here, not at
    # import, so that it holds wherever the warning filters were reset since (``warnings.catch_warnings``).
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # cfcl's modules keep their frozen parts (the guide classifiers of counterfactual fine-tuning) in eval mode
    # on purpose; Lightning's notice of it would be noise on every fine-tuning run.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    out = Path(out)
    cuda = uses_cuda(cfg)
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for the float32 parts (CPU unchanged)
    # On a GPU the progress bar reads its values at logging steps only: a read every step syncs the host.
    progress = [TQDMProgressBar(refresh_rate=cfg.log_every_n_steps)] if cuda and cfg.progress_bar else []
    checkpoints = [
        # last.ckpt as the one "best" checkpoint of no metric: replaced at every epoch's end, never versioned
        ModelCheckpoint(dirpath=out / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False),
        _interrupt_checkpoint(out / "checkpoints"),
        _rng_state_callback(),
    ]
    if cfg.keep_every_n_epochs:

        class KeptEpochs(ModelCheckpoint):  # a class of its own: Lightning keys a callback's state by its class
            pass

        checkpoints.append(
            KeptEpochs(
                dirpath=out / "checkpoints",
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                save_top_k=-1,
                every_n_epochs=cfg.keep_every_n_epochs,
            )
        )
    csv_logger, resume_log = _csv_logger(out)
    runs = _resumed_logger_runs(out)
    loggers = [csv_logger, *(_logger(name, out, runs.get(name)) for name in cfg.loggers if name != "csv")]
    run_records = [_logger_runs_callback(out, runs)] if set(cfg.loggers) & set(LOGGER_PACKAGES) else []
    lr_monitor = [] if overrides.get("logger") is False else [LearningRateMonitor(logging_interval="step")]
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
        callbacks=[
            _step_end_stop(),
            *checkpoints,
            resume_log,
            *run_records,
            *lr_monitor,
            *progress,
            *(callbacks or []),
        ],
        logger=loggers,
        plugins=[_atomic_checkpoint_io()],
        default_root_dir=out,
        enable_model_summary=False,
        deterministic="warn",
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
