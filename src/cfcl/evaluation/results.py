"""Turn test-set predictions into the rows of ``eval/metrics.csv``, ``eval/gains.csv`` and ``eval/seed_gains.csv``.

``metrics.csv`` columns: ``method, seed, protocol, label_fraction, test_set, domain, metric, value``.
Bootstrap intervals are extra rows whose metric is ``<metric>_ci_low`` / ``<metric>_ci_high``.

Two kinds of gain interval, for two questions: ``gains.csv`` resamples the test images (paired
bootstrap of the seed-averaged gain: how much the test set alone moves it); ``seed_gains.csv``
is the t-interval over seeds (pretraining seed and label draw: would another seed agree?). A
gain is called supported only when its seed interval excludes 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfcl.evaluation.metrics import auroc, balanced_accuracy, bootstrap_ci, paired_gain_ci, paired_seed_gain

COLUMNS = ["method", "seed", "protocol", "label_fraction", "test_set", "domain", "metric", "value"]
GAIN_COLUMNS = [
    "method", "reference", "protocol", "label_fraction", "test_set", "domain", "n_seeds", "gain", "ci_low", "ci_high",
]
METRIC_KEYS = ["protocol", "label_fraction", "test_set", "domain", "metric"]
SEED_GAIN_COLUMNS = [
    "method", "reference", *METRIC_KEYS, "n_seeds", "gain", "ci_low", "ci_high", "level", "n_positive", "supported", "note",
]
POINT_METRICS = ("auroc", "balanced_accuracy")
# Columns of ``domain_predictability.csv`` -> their metric name in ``seed_gains.csv`` (protocol ``embedding``).
INVARIANCE_MEASURES = {"balanced_accuracy": "domain_predictability", "knn_purity": "knn_purity", "silhouette": "silhouette"}


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


def seed_gain_rows(values: pd.DataFrame, reference: str, keys: list[str], level: float = 0.95) -> list[dict]:
    """Paired gain over seeds of every method over ``reference`` for each combination of ``keys``.

    ``values`` is long: ``method, seed, *keys, value``; the pairing is by seed (same pretraining
    seed and label draw), see :func:`cfcl.evaluation.metrics.paired_seed_gain`.
    """
    rows = []
    for key, part in values.groupby(keys, sort=False):
        by_method = {m: p.set_index("seed")["value"] for m, p in part.groupby("method", sort=True)}
        if reference not in by_method:
            continue
        for method, series in by_method.items():
            if method == reference:
                continue
            gain = paired_seed_gain(series, by_method[reference], level)
            rows.append(dict(
                method=method, reference=reference, **dict(zip(keys, key)), n_seeds=gain.n_seeds, gain=gain.mean,
                ci_low=gain.ci_low, ci_high=gain.ci_high, level=level, n_positive=gain.n_positive, supported=gain.supported,
                note=gain.note,
            ))
    return rows


def metric_seed_gains(metrics: pd.DataFrame, reference: str, level: float = 0.95) -> list[dict]:
    """``seed_gains.csv`` rows of ``metrics.csv``'s point metrics (not of their bootstrap bounds)."""
    return seed_gain_rows(metrics[metrics["metric"].isin(POINT_METRICS)], reference, METRIC_KEYS, level)


def invariance_seed_gains(table: pd.DataFrame, reference: str, test_set: str, level: float = 0.95) -> list[dict]:
    """``seed_gains.csv`` rows (protocol ``embedding``) of the invariance measures of ``domain_predictability.csv``.

    Lower is more domain-invariant, so a negative gain is a method clustering less by domain.
    """
    measures = [c for c in INVARIANCE_MEASURES if c in table.columns]
    values = table.melt(id_vars=["method", "seed"], value_vars=measures, var_name="metric", value_name="value")
    values["metric"] = values["metric"].map(INVARIANCE_MEASURES)
    rows = seed_gain_rows(values, reference, ["metric"], level)
    constant = dict(protocol="embedding", label_fraction=float("nan"), test_set=test_set, domain="all")
    return [{**row, **constant} for row in rows]


def as_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)
