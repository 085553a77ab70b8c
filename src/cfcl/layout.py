"""The run layout: the name of every folder and file of a run, spelled once.

A run folder holds one folder per stage, named as the stage (docs/architecture.md, "The run
layout"); the pipeline plans into these folders, the stages write these files and the report,
the summary and the benchmarks read them through :class:`RunLayout`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Stage folders of a run, each also the name of the stage that writes it. Every stage folder also
# holds config.yaml and manifest.json (the run folder config.yaml), named in cfcl.stage, which alone
# writes them.
DATA = "data"
TRUE_CF = "true_cf"  # inside DATA: the synthetic benchmark's true counterfactuals (of the scanner; true_cf_sex: of sex)
OVERVIEW = "overview.png"  # inside DATA: the synthetic benchmark's patients under every scanner
CF_MODEL = "cf_model"
CF_GUIDE = "cf_guide"  # the scanner's guide; cf_guide_sex: of sex (cf_guide_name)
CF_JUDGE = "cf_judge"  # the scanner's judge; cf_judge_sex: of sex (cf_judge_name)
CF_QUALITY_BASE = "cf_quality_base"  # the cf_quality stage on the generator before fine-tuning
CF_FINETUNE = "cf_finetune"
CF_STORE = (
    "cf_store"  # the scanner's counterfactuals; cf_store_sex: of sex; cf_store_base, cf_store_recon (cf_store_name)
)
CF_QUALITY = "cf_quality"  # the scanner's counterfactual quality; cf_quality_sex: of sex (cf_quality_name)
# Variants of a counterfactual store that the controls of cfcl.contrastive.methods read.
RENOISED = (
    "renoised"  # true_cf_renoised: the true counterfactuals with the acquisition noise redrawn per counterfactual
)
RECON = "recon"  # cf_store_recon: the true counterfactuals as the generator reconstructs them
BASE = "base"  # cf_store_base: the counterfactuals of the generator before fine-tuning
PRETRAIN = "pretrain"  # holds one folder per method and seed
EVAL = "eval"
REPORT = "report"
DRAW = "draw"  # draw-<d>/: one complete run per data draw of the synthetic benchmark (a run config's draws)

# Model files of the training stages.
GENERATOR_FILE = "generator.pt"
CLASSIFIER_FILE = "classifier.pt"
ENCODER_FILE = "encoder.pt"

# Figures of the training stages.
TRAINING_CURVE = "training_curve.png"
LOSS_CURVE = "loss_curve.png"
TRAINER_LOG = "logs/metrics.csv"

# Files of the cf_quality stage.
CF_QUALITY_JSON = "cf_quality.json"
PAIRS = "pairs.csv"
CF_GRID = "cf_grid.png"

# Files of the eval stage.
METRICS = "metrics.csv"
GAINS = "gains.csv"  # gains over the reference, paired bootstrap over test images
SEED_GAINS = "seed_gains.csv"  # gains over the reference, t-interval over seeds
VARIANCE = "variance_components.csv"  # seed, label-draw and test-image spread of each gain over the reference
SUBGROUP_GAPS = "subgroup_gaps.csv"  # each subgroup minus its column's reference (sex: M - F), t-interval over seeds
PREDICTABILITY = "domain_predictability.csv"
NOTES = "notes.txt"
TSNE = "tsne"  # folder of one t-SNE table per method
FEATURES = "features"  # cached frozen features
FINETUNE_RUNS = "finetune"  # one folder per fine-tuning run
TEST_PROB = "test_prob.npy"  # a fine-tuning run's test predictions

# Files of the report.
INDEX = "index.html"
SUMMARY = "summary.md"
FIGURES = "figures"


def tsne_png(method: str) -> str:
    """The eval stage's t-SNE figure of ``method``."""
    return f"tsne_{method}.png"


def draw_name(draw: int) -> str:
    """The run-relative folder of the sub-run of data draw ``draw`` (the synthetic benchmark's seed)."""
    return f"{DRAW}-{draw}"


def pretrain_name(method: str, seed: int) -> str:
    """The run-relative folder of one pretraining run."""
    return f"{PRETRAIN}/{method}-s{seed}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / DATA

    @property
    def true_cf(self) -> Path:
        return true_cf(self.data)

    @property
    def pretrain(self) -> Path:
        return self.root / PRETRAIN

    @property
    def eval(self) -> Path:
        return self.root / EVAL

    @property
    def metrics(self) -> Path:
        return self.eval / METRICS

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def stage(self, name: str) -> Path:
        """The folder of stage ``name`` (``cf_model``, ``pretrain/simclr-s0``...)."""
        return self.root / name

    def draws(self) -> dict[int, RunLayout]:
        """The sub-run of each data draw (``draw-<d>/``), by draw; empty for a run of one draw."""
        found = {}
        for folder in self.root.glob(f"{DRAW}-*"):
            if folder.is_dir() and (match := re.fullmatch(rf"{DRAW}-(\d+)", folder.name)):
                found[int(match[1])] = RunLayout(folder)
        return dict(sorted(found.items()))


def _folder_name(base: str, parents: tuple[str, ...], variant: str | None = None) -> str:
    """A per-parent folder: ``base``, then the intervened parents unless the scanner alone, then a control's store
    ``variant``."""
    return "_".join((base, *(() if tuple(parents) == ("domain",) else parents), *((variant,) if variant else ())))


def cf_store_name(parents: tuple[str, ...], variant: str | None = None) -> str:
    """The run folder of the counterfactual store that intervenes on ``parents``; ``variant``: a control's
    (``cf_store_base``: the generator before fine-tuning, ``cf_store_recon``: the true counterfactuals
    reconstructed)."""
    return _folder_name(CF_STORE, parents, variant)


def cf_guide_name(parent: str) -> str:
    """The run folder of the guide (classifier) of ``parent``."""
    return _folder_name(CF_GUIDE, (parent,))


def cf_judge_name(parent: str) -> str:
    """The run folder of the judge (classifier) of ``parent``."""
    return _folder_name(CF_JUDGE, (parent,))


def cf_quality_name(parents: tuple[str, ...]) -> str:
    """The run folder of the counterfactual quality of an intervention on ``parents`` (after fine-tuning)."""
    return _folder_name(CF_QUALITY, parents)


def true_cf(data: str | Path, parents: tuple[str, ...] = ("domain",), variant: str | None = None) -> Path:
    """The true counterfactual store of a synthetic benchmark's data folder, intervening on ``parents``;
    ``variant``: a control's (``true_cf_renoised``: the acquisition noise redrawn per counterfactual)."""
    return Path(data) / _folder_name(TRUE_CF, parents, variant)
