"""Do counterfactual test sets make a paired gain less noisy? A check on the VALIDATION split.

The benchmark knows every image as each scanner renders it (its true counterfactuals). A test set
"the split's patients as scanner D renders them" holds every patient of the split, where the
natural images of D are only the few patients D scanned (57 validation images of the rare
scanner, for example). For each pretraining seed of a finished run, this script fits the linear
probe on ``--fraction`` of the ID training labels (the evaluation's label draws), scores it on
the natural validation images of each scanner and on the validation patients rendered by each
scanner (the OOD scanner included; its natural images are the ``ood_train`` split, no test image
is read), and prints, per test set, the gain of ``--method`` over ``--baseline`` paired by seed:
mean, 95 % t-interval, its half-width and the number of images.

    python benchmarks/calibrate_cf_test_sets.py runs/bpow --seeds 0 1 2 3 4 5 6 7 8 9 10 11
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cfcl.api import embed, load_encoder
from cfcl.data.store import ImageStore
from cfcl.evaluation.evaluate import RenderedTest, rendered_test
from cfcl.evaluation.metrics import seed_interval
from cfcl.evaluation.probe import class_probabilities, fit_probe
from cfcl.evaluation.subsets import labelled_subset


def test_sets(store: ImageStore, rendered: RenderedTest) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Name -> (``store`` or ``rendered``, its rows, the labels): natural images and rendered validation patients per
    scanner."""
    meta, labels = store.meta, store.meta["label"].to_numpy()
    val = store.indices("val")
    sets = {}
    for d, name in enumerate(store.domains):
        natural = val[meta["domain"].to_numpy()[val] == d]
        if len(natural) == 0 and "ood_train" in set(meta["split"]):
            natural = store.indices("ood_train")
            natural = natural[meta["domain"].to_numpy()[natural] == d]
        if len(natural):
            sets[f"natural/{name}"] = ("store", natural, labels[natural])
        mine = np.flatnonzero(rendered.domains == d)
        sets[f"rendered/{name}"] = ("rendered", mine, labels[rendered.sources[mine]])
    return sets


def seed_scores(
    run: Path,
    method: str,
    seed: int,
    store: ImageStore,
    rendered: RenderedTest,
    sets: dict,
    fraction: float,
    draws: int,
) -> dict[str, float]:
    """Each test set's AUROC, averaged over the label draws, for one pretrained encoder."""
    encoder = load_encoder(run / "pretrain" / f"{method}-s{seed}")
    features = {"store": embed(encoder, store), "rendered": embed(encoder, rendered.store.images[rendered.rows])}
    labels, train = store.meta["label"].to_numpy(), store.indices("train")
    scores = {name: [] for name in sets}
    for draw in range(draws):
        rows = labelled_subset(store.meta, train, fraction, seed, "train", draw)
        probe = fit_probe(features["store"][rows], labels[rows], seed=seed)
        for name, (source, idx, y) in sets.items():
            prob = class_probabilities(probe, features[source][idx], len(store.labels))
            scores[name].append(roc_auc_score(y, prob[:, 1]))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder with data/ and pretrain/<method>-s<seed>/")
    parser.add_argument("--method", default="cf-simclr")
    parser.add_argument("--baseline", default="simclr")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="development seeds")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    store = ImageStore.open(args.run / "data")
    rendered = rendered_test(store, "val")
    if rendered is None:
        raise SystemExit(
            f"calibrate_cf_test_sets: {args.run / 'data'} has no true counterfactuals (a synthetic benchmark store has)"
        )
    sets = test_sets(store, rendered)
    gains = {name: [] for name in sets}
    for seed in args.seeds:
        method = seed_scores(args.run, args.method, seed, store, rendered, sets, args.fraction, args.draws)
        baseline = seed_scores(args.run, args.baseline, seed, store, rendered, sets, args.fraction, args.draws)
        for name in sets:
            gains[name].append(method[name] - baseline[name])
        print(json.dumps({"seed": seed, **{name: round(g[-1], 4) for name, g in gains.items()}}), flush=True)
    print(
        f"\n| validation test set | images | gain {args.method} − {args.baseline} | half-width | sd over seeds |\n"
        "|---|---|---|---|---|"
    )
    for name, values in gains.items():
        gain = seed_interval(pd.Series(values, index=args.seeds))
        print(
            f"| {name} | {len(sets[name][1])} | {gain.mean:+.3f} [{gain.ci_low:+.3f}, {gain.ci_high:+.3f}] | "
            f"{(gain.ci_high - gain.ci_low) / 2:.3f} | {np.std(values, ddof=1):.3f} |"
        )


if __name__ == "__main__":
    main()
