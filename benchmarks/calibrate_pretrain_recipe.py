"""Which pretraining recipe lets the benchmark resolve a gain of 0.02 within its time budget? Validation only.

For each recipe (a name and pretrain config overrides on top of a run config's pretraining),
every method is pretrained with every development seed, and its frozen features are probed as
the evaluation probes them (logistic regression on ``--fraction`` of the ID training labels,
``--draws`` label draws per seed, averaged per seed), but scored on images that no final
evaluation reads as a test set:

- ``id``: the ID **validation** split; ``rare``: its images of the rarest ID scanner;
- ``transfer``: the ID probe applied to the OOD scanner's **training** split;
- ``ood_probe``: a probe on ``--fraction`` of one half of the OOD training patients, scored on the
  other half.

``seconds_per_run`` is each pretraining run's own time from its manifest, so cached runs count as
when they ran (on a busy machine, more).

Per recipe it prints the seconds per pretraining run, each method's mean score, and each
method's gain over the first method paired by seed (mean, 95 % t-interval over seeds, its
standard deviation) with ``seeds_needed``: the fewest seeds whose projected half-width is at most
``--target`` (t quantile of that many seeds times the measured sd, over its square root). One
JSON line per recipe, then a Markdown table.

    python benchmarks/calibrate_pretrain_recipe.py benchmark --data runs/bpow/data \\
        --cf-store runs/bpow/cf_store --methods simclr cf-simclr --seeds 0 1 2 3 4 5 \\
        --recipe base --recipe e5:trainer.max_epochs=5 --out runs/recipes

A recipe is ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (pretrain config overrides). Runs are
cached in ``OUT/NAME/METHOD-sSEED`` like any pretrain stage, so a rerun only probes.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pretrain_budget import pretrain_config
from sklearn.metrics import roc_auc_score

from cfcl.api import embed, load_encoder
from cfcl.contrastive import pretrain
from cfcl.data.store import ImageStore
from cfcl.evaluation.metrics import VarianceComponents, seed_interval
from cfcl.evaluation.probe import class_probabilities, fit_probe
from cfcl.evaluation.subsets import labelled_subset, patient_holdout


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` -> (NAME, overrides); values may not hold commas."""
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(",") if o]


def validation_scores(features: np.ndarray, store: ImageStore, fraction: float, seed: int, draws: int) -> dict:
    """The four validation AUROCs of one encoder, each averaged over the label draws."""
    meta, labels = store.meta, store.meta["label"].to_numpy()
    train, val = store.indices("train"), store.indices("val")
    rare_domain = meta["domain"].iloc[train].value_counts().idxmin()
    rare = val[meta["domain"].iloc[val].to_numpy() == rare_domain]
    ood_fit, ood_score = patient_holdout(meta, store.indices("ood_train"), 0.5, seed=0)
    ood_all = np.concatenate([ood_fit, ood_score])

    def auroc(probe, rows):
        return roc_auc_score(labels[rows], class_probabilities(probe, features[rows], len(store.labels))[:, 1])

    scores = {"id": [], "rare": [], "transfer": [], "ood_probe": []}
    for draw in range(draws):
        rows = labelled_subset(meta, train, fraction, seed, draw=draw)
        probe = fit_probe(features[rows], labels[rows], seed=seed)
        scores["id"].append(auroc(probe, val))
        scores["rare"].append(auroc(probe, rare))
        scores["transfer"].append(auroc(probe, ood_all))
        rows = labelled_subset(meta, ood_fit, fraction, seed, split="ood_train", draw=draw)
        scores["ood_probe"].append(auroc(fit_probe(features[rows], labels[rows], seed=seed), ood_score))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def seeds_needed(sd: float, target: float, most: int = 200) -> int | None:
    """Fewest seeds whose projected 95 % half-width at this SD of a seed's (draw-averaged) gain is at most
    ``target``."""
    components = VarianceComponents(n_seeds=0, n_draws=1, sd_seed=sd, sd_draw=0.0, half_width=float("nan"))
    needed = components.seeds_needed(target, draws=1, most=most)
    return None if np.isnan(needed) else int(needed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="run config file or preset whose pretrain section is the base recipe")
    parser.add_argument("--data", type=Path, required=True, help="the run's image store")
    parser.add_argument("--cf-store", type=Path, help="counterfactual store, for the counterfactual methods")
    parser.add_argument("--methods", nargs="+", default=["simclr", "cf-simclr"], help="the first is the reference")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="development seeds")
    parser.add_argument("--recipe", action="append", required=True, help="NAME or NAME:KEY=VALUE,KEY=VALUE")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.02, help="95 %% half-width the gain must reach")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    store = ImageStore.open(args.data)
    reference, results = args.methods[0], []
    for recipe in args.recipe:
        name, overrides = parse_recipe(recipe)
        rows, seconds = [], []
        for method in args.methods:
            cf_store = None if method == reference else args.cf_store
            for seed in args.seeds:
                config = pretrain_config(args.config, method, seed, args.data, cf_store, None, overrides)
                out = args.out / name / f"{method}-s{seed}"
                manifest = pretrain.run(config, out)
                seconds.append(
                    (
                        datetime.fromisoformat(manifest["finished"]) - datetime.fromisoformat(manifest["started"])
                    ).total_seconds()
                )
                features = embed(load_encoder(out), store)
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        **validation_scores(features, store, args.fraction, seed, args.draws),
                    }
                )
        table = pd.DataFrame(rows).set_index("seed")
        result = {
            "recipe": name,
            "overrides": overrides,
            "seconds_per_run": round(float(np.mean(seconds)), 1) if seconds else None,
        }
        for test_set in ("id", "rare", "transfer", "ood_probe"):
            ref = table[table.method == reference][test_set]
            result[test_set] = {
                "mean": {m: round(float(table[table.method == m][test_set].mean()), 4) for m in args.methods}
            }
            for method in args.methods[1:]:
                diff = table[table.method == method][test_set] - ref
                gain = seed_interval(diff)
                sd = float(diff.std(ddof=1))
                result[test_set][f"{method}-{reference}"] = {
                    "mean": round(gain.mean, 4),
                    "low": round(gain.ci_low, 4),
                    "high": round(gain.ci_high, 4),
                    "n": gain.n_seeds,
                    "positive": gain.n_positive,
                    "sd": round(sd, 4),
                    "seeds_needed": seeds_needed(sd, args.target),
                }
        results.append(result)
        print(json.dumps(result), flush=True)
    method = args.methods[1]
    print(
        f"\n| recipe | s per run | test set | {reference} | {method} | gain [95 % interval], positive/n | sd "
        f"| seeds for ±{args.target:g} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        for test_set in ("id", "rare", "transfer", "ood_probe"):
            g = result[test_set][f"{method}-{reference}"]
            means = result[test_set]["mean"]
            print(
                f"| {result['recipe']} | {result['seconds_per_run']} | {test_set} "
                f"| {means[reference]:.3f} | {means[method]:.3f} "
                f"| {g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}], {g['positive']}/{g['n']} "
                f"| {g['sd']:.3f} | {g['seeds_needed']} |"
            )


if __name__ == "__main__":
    main()
