"""Is the benchmark's scanner physics strong enough? A supervised model's drop per scanner, on the VALIDATION split.

For each condition (burned-in frames and markers on, off), per seed: generate the benchmark's
training split and a validation split of ``--n-val`` images (no test or OOD image is generated,
so none is read), train a supervised small CNN on every ID training label, and score it on the
validation patients rendered by **every** scanner, the held-out one included (the store's true
counterfactuals: same patient, pose, lesion and noise, only the scanner differs). The drop of a
scanner is AUROC(majority scanner) - AUROC(that scanner) on the same patients, so it measures the
scanner alone, not a difference between patient samples. Prints one JSON line per condition:
each scanner's AUROC and drop with a 95 % t-interval over the seeds (each seed draws its own
store and model). Plain PyTorch loops, as in calibrate_synth.py: this script checks the data.

    python benchmarks/calibrate_scanner_shift.py [--frames on off] [--seeds 0 1 2] [--n-val 1200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from calibrate_sex_gap import interval
from calibrate_synth import as_tensor, auroc, log, predict, train_classifier

from cfcl.data.store import ImageStore
from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.generate import generate
from cfcl.layout import true_cf


def measure(config: SynthConfig, epochs: int, seed: int) -> dict:
    """Validation AUROC of a supervised CNN under each scanner, and each scanner's drop below the majority one."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(config, Path(tmp))
        store, cf = ImageStore.open(Path(tmp)), ImageStore.open(true_cf(Path(tmp)))
        train, val = store.indices("train"), store.indices("val")
        x_train = as_tensor(store.images[train])
        labels = store.meta["label"].to_numpy()
        rendered = cf.meta[cf.meta["source_index"].isin(val)]
        views = {
            name: rendered[rendered["target_domain"] == d].sort_values("source_index")
            for d, name in enumerate(store.domains)
        }
        x_views = {name: as_tensor(cf.images[rows.index.to_numpy()]) for name, rows in views.items()}
    majority = store.domains[int(np.bincount(store.meta["domain"].to_numpy()[train]).argmax())]
    model = train_classifier(x_train, labels[train], 2, epochs, seed)
    result = {}
    for name, rows in views.items():
        result[f"auroc_{name}"] = auroc(labels[rows["source_index"].to_numpy()], predict(model, x_views[name])[:, 1])
    for name in (n for n in views if n != majority):
        result[f"drop_{name}"] = round(result[f"auroc_{majority}"] - result[f"auroc_{name}"], 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-val", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for frames in args.frames:
        started, per_seed = time.time(), []
        for seed in args.seeds:
            config = SynthConfig(
                seed=seed, n_val=args.n_val, n_test=0, n_ood_train=0, n_ood_test=0, frames=frames == "on"
            )
            per_seed.append(measure(config, args.epochs, seed))
            log(f"frames {frames}", seed, per_seed[-1])
        summary = {key: interval([r[key] for r in per_seed]) for key in per_seed[0]}
        print(
            json.dumps(
                {
                    "frames": frames,
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
