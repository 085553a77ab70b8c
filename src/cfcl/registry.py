"""Every stage command: its words on the command line, its config model, its runner and its check.

The CLI builds its parsers from this table and the pipeline builds its stages from it, so a
stage is declared once. Each entry's ``load`` function imports the stage's code (torch, Lightning)
only when the stage runs, which keeps ``cfcl --help`` fast; a stage's runner is ``run`` of its stage
module (docs/architecture.md, "The stage contract").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfcl.contrastive.methods import cf_store_help, method_help
from cfcl.data import DATASETS
from cfcl.errors import MissingKeyError
from cfcl.stage import check_output_folder

_DATASET_WORDS = f"{', '.join(DATASETS[:-2])}, {DATASETS[-2]} or {DATASETS[-1]}"


@dataclass(frozen=True)
class Flag:
    """A command-line shorthand for one config key."""

    name: str
    key: str
    help: str
    repeat: bool = False
    const: str | None = None  # a switch: present means ``key=const``


@dataclass(frozen=True)
class StageCode:
    """What running a stage needs: its config model, its runner ``run(config, out, force=False) -> dict``
    and ``check``, a function of the config that refuses what can be known wrong before the stage
    reads or writes anything (``cfcl run --dry-run`` calls it too)."""

    config: type
    run: Callable[..., dict]
    check: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class StageCommand:
    """One stage: ``load`` imports and returns its :class:`StageCode` (so only a stage that runs
    imports torch); ``example`` is the ``--set KEY=VALUE`` its help shows (a key of its own config)."""

    words: tuple[str, ...]
    help: str
    load: Callable[[], StageCode]
    example: str
    flags: tuple[Flag, ...] = field(default_factory=tuple)


def _data_synth() -> StageCode:
    from cfcl.data.synthetic.config import SynthConfig
    from cfcl.data.synthetic.generate import run

    return StageCode(SynthConfig, run)


def _data_prepare() -> StageCode:
    from cfcl.data.prepare import PrepareConfig, check, run

    return StageCode(PrepareConfig, run, check)


def _cf_classifier() -> StageCode:
    from cfcl.counterfactual.classifier.train import run
    from cfcl.counterfactual.config import ClassifierConfig

    return StageCode(ClassifierConfig, run)


def _cf_train() -> StageCode:
    from cfcl.counterfactual.config import CFTrainConfig
    from cfcl.counterfactual.generator.train import run

    return StageCode(CFTrainConfig, run)


def _cf_finetune() -> StageCode:
    from cfcl.counterfactual.config import CFFinetuneConfig
    from cfcl.counterfactual.generator.finetune import run

    return StageCode(CFFinetuneConfig, run)


def _cf_generate() -> StageCode:
    from cfcl.counterfactual.config import CFGenerateConfig
    from cfcl.counterfactual.generate_store import run

    return StageCode(CFGenerateConfig, run)


def _cf_evaluate() -> StageCode:
    from cfcl.counterfactual.config import QualityConfig
    from cfcl.counterfactual.quality.evaluate import run

    return StageCode(QualityConfig, run)


def _pretrain() -> StageCode:
    from cfcl.contrastive.config import PretrainConfig
    from cfcl.contrastive.pretrain import run

    return StageCode(PretrainConfig, run)


def _evaluate() -> StageCode:
    from cfcl.evaluation.config import EvaluateConfig
    from cfcl.evaluation.evaluate import run

    return StageCode(EvaluateConfig, run)


STAGES: tuple[StageCommand, ...] = (
    StageCommand(
        ("data", "synth"),
        "generate the synthetic multi-scanner radiograph benchmark (with its true counterfactuals)",
        _data_synth,
        "n_train=2000",
    ),
    StageCommand(
        ("data", "prepare"),
        f"convert a real dataset ({_DATASET_WORDS}; csv: any table + image folder) into an image store",
        _data_prepare,
        "val_fraction=0.2",
        (
            Flag("--dataset", "dataset", _DATASET_WORDS),
            Flag("--root", "root", "folder holding the dataset as distributed"),
            Flag("--size", "size", "output size: N (square) or [H, W]; short side resized, centre cropped"),
            Flag("--workers", "workers", "decoding processes"),
            Flag("--skip-bad", "skip_bad", "leave out unreadable images and list them in bad_rows.csv", const="true"),
        ),
    ),
    StageCommand(
        ("cf", "classifier"),
        "train a classifier of a parent (the scanner by default, --set parent=sex) on real images: --config cf_guide "
        "(guides fine-tuning) or cf_judge (judges quality)",
        _cf_classifier,
        "max_train_images=5000",
        (Flag("--data", "data", "image store to train on (its train/val splits)"),),
    ),
    StageCommand(
        ("cf", "train"),
        "train the HVAE image mechanism (the counterfactual generator) on an image store",
        _cf_train,
        "beta=3",
        (Flag("--data", "data", "image store to train on (its train split)"),),
    ),
    StageCommand(
        ("cf", "finetune"),
        "counterfactual fine-tuning of the generator's decoder, guided by a classifier of each guided parent "
        "(cf_guide, cf_guide_sex)",
        _cf_finetune,
        "trainer.max_epochs=5",
        (
            Flag("--generator", "generator", "generator folder (cfcl cf train)"),
            Flag(
                "--guide",
                "guide",
                "guidance classifier folder (cfcl cf classifier --config cf_guide); repeat for one guide of each "
                "parent to guide (cfcl cf classifier --set parent=sex)",
                repeat=True,
            ),
            Flag("--data", "data", "image store to fine-tune on (its train split)"),
        ),
    ),
    StageCommand(
        ("cf", "generate"),
        "write the counterfactual store: every training image x every other in-distribution domain",
        _cf_generate,
        "splits=[train,val]",
        (
            Flag("--generator", "generator", "generator folder (cfcl cf train / finetune)"),
            Flag("--data", "data", "image store the counterfactuals are made from"),
        ),
    ),
    StageCommand(
        ("cf", "evaluate"),
        "counterfactual quality: effectiveness (judge), composition, reversibility, error vs true counterfactuals",
        _cf_evaluate,
        "n_per_domain=64",
        (
            Flag("--data", "data", "image store the counterfactuals are made from"),
            Flag("--generator", "generator", "generator folder (cfcl cf train / finetune) or a counterfactual store"),
            Flag(
                "--judge",
                "judge",
                "judge classifier folder (cfcl cf classifier --config cf_judge); several parents: --set judge=[A,B]",
            ),
        ),
    ),
    StageCommand(
        ("pretrain",),
        "contrastive (SimCLR family) or self-distillation (DINO family) pretraining of an encoder by one method, "
        "--method (resumes an unfinished run in --out)",
        _pretrain,
        "temperature=0.2",
        (
            Flag("--method", "method", method_help()),
            Flag("--data", "data", "image store to pretrain on (its train split)"),
            Flag("--cf-store", "cf_store", cf_store_help()),
            Flag(
                "--resume",
                "resume",
                "fail unless --out holds an unfinished run of this config to continue",
                const="require",
            ),
        ),
    ),
    StageCommand(
        ("evaluate",),
        "linear probes, fine-tuning and baselines over label fractions and seeds; ID / OOD / per-domain metrics",
        _evaluate,
        "label_fractions=[0.01,0.1,1.0]",
        (
            Flag("--data", "data", "image store to evaluate on"),
            Flag("--encoder", "encoders", "pretrain folder (cfcl pretrain); repeat for several", repeat=True),
        ),
    ),
)


def check_stage(command: StageCommand, config, out: Path) -> None:
    """Everything a stage command can refuse before it starts: an ``--out`` that is not a folder and
    the stage's own check; a missing key is named by the flag that sets it, if there is one."""
    check_output_folder(out, f"--out {out}")
    check = command.load().check
    if check is None:
        return
    try:
        check(config)
    except MissingKeyError as exc:
        flag = next((f.name for f in command.flags if f.key == exc.key), None)
        raise exc.by_flag(flag) if flag else exc from None
