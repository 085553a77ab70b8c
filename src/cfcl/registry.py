"""Every stage command: its words on the command line, its config model and its runner.

The CLI builds its parsers from this table and the pipeline builds its stages from it, so a
stage is declared once. Models and runners are named as ``module:attribute`` and imported
only when used, which keeps ``cfcl --help`` fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from cfcl.errors import MissingKeyError
from cfcl.stage import check_output_folder

# The real datasets ``cfcl data prepare`` reads: each has a module ``cfcl.data.datasets.<name>``
# and a section ``<name>`` in its config (docs/architecture.md, "Where new things go").
DATASETS = ("padchest", "chexpert", "rsna", "embed", "vindr", "csv")
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
class StageCommand:
    """One stage: its config model and the function that runs it, both as ``module:attribute``.

    ``example`` is the ``--set KEY=VALUE`` its help shows (a key of its own config); ``check``, a
    function of the config that refuses what can be known wrong before the stage reads or writes
    anything (``cfcl run --dry-run`` calls it too).
    """

    words: tuple[str, ...]
    help: str
    config: str
    runner: str
    example: str
    flags: tuple[Flag, ...] = field(default_factory=tuple)
    check: str | None = None


STAGES: tuple[StageCommand, ...] = (
    StageCommand(
        ("data", "synth"),
        "generate the synthetic multi-scanner radiograph benchmark (with its true counterfactuals)",
        "cfcl.data.synthetic.config:SynthConfig",
        "cfcl.data.synthetic.generate:run",
        "n_train=2000",
    ),
    StageCommand(
        ("data", "prepare"),
        f"convert a real dataset ({_DATASET_WORDS}; csv: any table + image folder) into an image store",
        "cfcl.data.prepare:PrepareConfig",
        "cfcl.data.prepare:run",
        "val_fraction=0.2",
        (
            Flag("--dataset", "dataset", _DATASET_WORDS),
            Flag("--root", "root", "folder holding the dataset as distributed"),
            Flag("--size", "size", "output size: N (square) or [H, W]; short side resized, centre cropped"),
            Flag("--workers", "workers", "decoding processes"),
            Flag("--skip-bad", "skip_bad", "leave out unreadable images and list them in bad_rows.csv", const="true"),
        ),
        "cfcl.data.prepare:check",
    ),
    StageCommand(
        ("cf", "classifier"),
        "train a classifier of a parent (the scanner by default, --set parent=sex) on real images: --config cf_guide (guides fine-tuning) or cf_judge (judges quality)",
        "cfcl.counterfactual.config:ClassifierConfig",
        "cfcl.counterfactual.classifier.train:run",
        "max_train_images=5000",
        (Flag("--data", "data", "image store to train on (its train/val splits)"),),
    ),
    StageCommand(
        ("cf", "train"),
        "train the HVAE image mechanism (the counterfactual generator) on an image store",
        "cfcl.counterfactual.config:CFTrainConfig",
        "cfcl.counterfactual.generator.train:run",
        "beta=3",
        (Flag("--data", "data", "image store to train on (its train split)"),),
    ),
    StageCommand(
        ("cf", "finetune"),
        "counterfactual fine-tuning of the generator's decoder, guided by a classifier of each guided parent (cf_guide, cf_guide_sex)",
        "cfcl.counterfactual.config:CFFinetuneConfig",
        "cfcl.counterfactual.generator.finetune:run",
        "trainer.max_epochs=5",
        (
            Flag("--generator", "generator", "generator folder (cfcl cf train)"),
            Flag("--guide", "guide", "guidance classifier folder (cfcl cf classifier --config cf_guide); repeat for one guide of each "
                 "parent to guide (cfcl cf classifier --set parent=sex)", repeat=True),
            Flag("--data", "data", "image store to fine-tune on (its train split)"),
        ),
    ),
    StageCommand(
        ("cf", "generate"),
        "write the counterfactual store: every training image x every other in-distribution domain",
        "cfcl.counterfactual.config:CFGenerateConfig",
        "cfcl.counterfactual.generate_store:run",
        "splits=[train,val]",
        (
            Flag("--generator", "generator", "generator folder (cfcl cf train / finetune)"),
            Flag("--data", "data", "image store the counterfactuals are made from"),
        ),
    ),
    StageCommand(
        ("cf", "evaluate"),
        "counterfactual quality: effectiveness (judge), composition, reversibility, error vs true counterfactuals",
        "cfcl.counterfactual.config:QualityConfig",
        "cfcl.counterfactual.quality.evaluate:run",
        "n_per_domain=64",
        (
            Flag("--data", "data", "image store the counterfactuals are made from"),
            Flag("--generator", "generator", "generator folder (cfcl cf train / finetune) or a counterfactual store"),
            Flag("--judge", "judge", "judge classifier folder (cfcl cf classifier --config cf_judge); several parents: --set judge=[A,B]"),
        ),
    ),
    StageCommand(
        ("pretrain",),
        "contrastive or self-distillation pretraining of an encoder: simclr, simclr+, cf-simclr, cf-simclr-multi, oracle, oracle-multi, dino, dino+, cf-dino or oracle-dino (resumes an unfinished run in --out)",
        "cfcl.contrastive.config:PretrainConfig",
        "cfcl.contrastive.pretrain:run",
        "temperature=0.2",
        (
            Flag("--method", "method", "simclr, simclr+, cf-simclr, cf-simclr-multi, oracle or oracle-multi"),
            Flag("--data", "data", "image store to pretrain on (its train split)"),
            Flag("--cf-store", "cf_store", "counterfactual store of --data (simclr+, cf-simclr, cf-simclr-multi, sex-cf-simclr; oracle, oracle-multi: DATA/true_cf; sex-oracle: DATA/true_cf_sex)"),
            Flag("--resume", "resume", "fail unless --out holds an unfinished run of this config to continue", const="require"),
        ),
    ),
    StageCommand(
        ("evaluate",),
        "linear probes, fine-tuning and baselines over label fractions and seeds; ID / OOD / per-domain metrics",
        "cfcl.evaluation.config:EvaluateConfig",
        "cfcl.evaluation.evaluate:run",
        "label_fractions=[0.01,0.1,1.0]",
        (
            Flag("--data", "data", "image store to evaluate on"),
            Flag("--encoder", "encoders", "pretrain folder (cfcl pretrain); repeat for several", repeat=True),
        ),
    ),
)


def load_ref(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def check_stage(command: StageCommand, config, out: Path) -> None:
    """Everything a stage command can refuse before it starts: an ``--out`` that is not a folder and
    the stage's own check; a missing key is named by the flag that sets it, if there is one."""
    check_output_folder(out, f"--out {out}")
    if command.check is None:
        return
    try:
        load_ref(command.check)(config)
    except MissingKeyError as exc:
        flag = next((f.name for f in command.flags if f.key == exc.key), None)
        raise exc.by_flag(flag) if flag else exc from None
