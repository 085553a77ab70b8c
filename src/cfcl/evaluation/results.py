"""Turn test-set predictions into the long-format rows of ``eval/metrics.csv`` and ``eval/gains.csv``.

``metrics.csv`` columns: ``method, seed, protocol, label_fraction, test_set, domain, metric, value``.
Bootstrap intervals are extra rows whose metric is ``<metric>_ci_low`` / ``<metric>_ci_high``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfcl.evaluation.metrics import auroc, balanced_accuracy, bootstrap_ci, paired_gain_ci

COLUMNS = ["method", "seed", "protocol", "label_fraction", "test_set", "domain", "metric", "value"]
GAIN_COLUMNS = [
    "method", "reference", "protocol", "label_fraction", "test_set", "domain", "n_seeds", "gain", "ci_low", "ci_high",
]


@dataclass
class Prediction:
    """Scores of one trained classifier on one test set."""

    method: str
    seed: int
    protocol: str
    label_fraction: float
    test_set: str
    y: np.ndarray
    domain: np.ndarray
    prob: np.ndarray

    @property
    def key(self) -> tuple:
        return self.protocol, self.label_fraction, self.test_set


def domain_groups(pred: Prediction, domain_names: list[str]) -> list[tuple[str, np.ndarray]]:
    """``("all", every image)`` and, when the test set spans several domains, each domain on its own."""
    groups = [("all", np.ones(len(pred.y), dtype=bool))]
    present = np.unique(pred.domain)
    if len(present) > 1:
        groups += [(domain_names[d], pred.domain == d) for d in present]
    return groups


def metric_rows(pred: Prediction, domain_names: list[str], n_boot: int, level: float, notes: list[str]) -> list[dict]:
    """Point values and bootstrap intervals per domain group; a single-class group is noted and skipped."""
    rows = []
    for domain, mask in domain_groups(pred, domain_names):
        y, prob = pred.y[mask], pred.prob[mask]
        if len(np.unique(y)) < 2:
            notes.append(
                f"{pred.method} seed {pred.seed} {pred.protocol} {pred.test_set}/{domain}: single class, no metrics"
            )
            continue
        values = {"auroc": auroc(y, prob), "balanced_accuracy": balanced_accuracy(y, prob.argmax(-1))}
        for metric, (low, high) in bootstrap_ci(y, prob, n_boot, level, seed=pred.seed).items():
            values[f"{metric}_ci_low"], values[f"{metric}_ci_high"] = low, high
        base = dict(
            method=pred.method, seed=pred.seed, protocol=pred.protocol, label_fraction=pred.label_fraction,
            test_set=pred.test_set, domain=domain,
        )
        rows += [{**base, "metric": metric, "value": value} for metric, value in values.items()]
    return rows


def gain_rows(preds: list[Prediction], reference: str, domain_names: list[str], n_boot: int, level: float) -> list[dict]:
    """Seed-averaged AUROC gain of every method over ``reference``, paired bootstrap interval per domain."""
    by_key: dict[tuple, dict[str, dict[int, Prediction]]] = defaultdict(lambda: defaultdict(dict))
    for p in preds:
        by_key[p.key][p.method][p.seed] = p
    rows = []
    for key, methods in by_key.items():
        ref = methods.get(reference)
        if ref is None:
            continue
        for method, seeds in methods.items():
            common = sorted(set(seeds) & set(ref))
            if method == reference or not common:
                continue
            first = seeds[common[0]]
            for domain, mask in domain_groups(first, domain_names):
                if len(np.unique(first.y[mask])) < 2:
                    continue
                gain, low, high = paired_gain_ci(
                    first.y[mask], [seeds[s].prob[mask] for s in common], [ref[s].prob[mask] for s in common],
                    n_boot, level, seed=common[0],
                )
                protocol, fraction, test_set = key
                rows.append(dict(
                    method=method, reference=reference, protocol=protocol, label_fraction=fraction,
                    test_set=test_set, domain=domain, n_seeds=len(common), gain=gain, ci_low=low, ci_high=high,
                ))
    return rows


def as_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)
