"""Calibration of the benchmark's gap between the sexes on the VALIDATION split (docs/benchmark.md,
"Sex and the subgroup gap"): prints one JSON line per setting.

For each setting of breast tissue (``sex.breast_shadow``), how much of a lesion it hides
(``sex.breast_masking``) and the share of women in training, it generates the benchmark's train and
validation images (validation enlarged to ``--n-val`` images so that the gap is measured precisely;
no test or OOD image is generated, so none is read) and trains, per seed:
  - a supervised small CNN on every training label: validation AUROC per sex and the gap M - F;
  - a small CNN telling the sex: validation balanced accuracy (what a sex judge or guide can reach).
The gap's interval is a 95 % t-interval over the seeds (each seed draws its own store and model).
Plain PyTorch loops on purpose, as in calibrate_synth.py: this script checks the data.

    python benchmarks/calibrate_sex_gap.py --grid 0.05:0.3 0.1:0.6 0.15:0.9 [--seeds 0 1 2] [--female-train 0.3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from calibrate_synth import as_tensor, auroc, log, predict, train_classifier
from sklearn.metrics import balanced_accuracy_score

from cfcl.data.store import ImageStore
from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.generate import generate
from cfcl.evaluation.metrics import seed_interval


def store_config(shadow: float, masking: float, female_train: float, n_val: int, seed: int) -> SynthConfig:
    """The default benchmark's training split with the sex setting, a larger validation split, no test images."""
    return SynthConfig(
        seed=seed,
        n_val=n_val,
        n_test=0,
        n_ood_train=0,
        n_ood_test=0,
        sex={"breast_shadow": shadow, "breast_masking": masking, "female_share": {"train": female_train}},
    )


def measure(config: SynthConfig, epochs: int, seed: int) -> dict:
    """Per-sex validation AUROC of a supervised CNN, the gap, and how well a CNN reads the sex."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(config, Path(tmp))
        store = ImageStore.open(Path(tmp))
        meta = store.meta
        train, val = store.indices("train"), store.indices("val")
        x_train, x_val = as_tensor(store.images[train]), as_tensor(store.images[val])
    label, male = meta["label"].to_numpy(), (meta["sex"] == "M").to_numpy().astype(int)
    p_val = predict(train_classifier(x_train, label[train], 2, epochs, seed), x_val)[:, 1]
    y_val, m_val = label[val], male[val].astype(bool)
    sex_model = train_classifier(x_train, male[train], 2, epochs, seed)
    sex_bacc = balanced_accuracy_score(male[val], predict(sex_model, x_val).argmax(1))
    result = {
        "auroc": auroc(y_val, p_val),
        "auroc_F": auroc(y_val[~m_val], p_val[~m_val]),
        "auroc_M": auroc(y_val[m_val], p_val[m_val]),
    }
    return {**result, "gap": round(result["auroc_M"] - result["auroc_F"], 4), "sex_bacc": round(float(sex_bacc), 4)}


def interval(values: list[float]) -> list[float]:
    """Mean and 95 % t-interval over seeds (the evaluation's own seed interval); the mean alone for one seed."""
    found = seed_interval(pd.Series(values, index=range(len(values))))
    return (
        [round(found.mean, 4)]
        if found.n_seeds < 2
        else [round(v, 4) for v in (found.mean, found.ci_low, found.ci_high)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="+", default=["0.05:0.3"], help="settings SHADOW:MASKING[:FEMALE_TRAIN_SHARE]")
    parser.add_argument(
        "--female-train", type=float, default=0.3, help="share of women in training unless a setting names one"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-val", type=int, default=2400)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for setting in args.grid:
        parts = [float(v) for v in setting.split(":")]
        shadow, masking, female = parts[0], parts[1], parts[2] if len(parts) > 2 else args.female_train
        started, per_seed = time.time(), []
        for seed in args.seeds:
            per_seed.append(measure(store_config(shadow, masking, female, args.n_val, seed), args.epochs, seed))
            log(setting, seed, per_seed[-1])
        summary = {key: interval([r[key] for r in per_seed]) for key in per_seed[0]}
        print(
            json.dumps(
                {
                    "breast_shadow": shadow,
                    "breast_masking": masking,
                    "female_train": female,
                    "seeds": args.seeds,
                    "n_val": args.n_val,
                    **summary,
                    "seconds": round(time.time() - started, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
