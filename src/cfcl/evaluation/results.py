"""Turn test-set predictions into the rows of ``eval/metrics.csv``, ``gains.csv``, ``seed_gains.csv`` and ``subgroup_gaps.csv``.

``metrics.csv`` columns: ``method, seed, protocol, label_fraction, test_set, domain, subgroup, metric, value``.
Bootstrap intervals are extra rows whose metric is ``<metric>_ci_low`` / ``<metric>_ci_high``. ``subgroup`` is
``all`` for the whole test set (or one of its domains) and ``<column>=<value>`` (``sex=F``) for the test images
with that metadata value; a table written before subgroups existed lacks the column and reads as ``all``
(:func:`with_subgroup`).

Two kinds of gain interval, for two questions: ``gains.csv`` resamples the test images (paired
bootstrap of the seed-averaged gain: how much the test set alone moves it); ``seed_gains.csv``
is the t-interval over seeds (pretraining seed and label draw: would another seed agree?). A
gain is called supported only when its seed interval excludes 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cfcl.evaluation.metrics import auroc, balanced_accuracy, bootstrap_ci, paired_gain_ci, paired_seed_gain

COLUMNS = ["method", "seed", "protocol", "label_fraction", "test_set", "domain", "subgroup", "metric", "value"]
WHOLE = "all"  # the subgroup of every test image
GAIN_COLUMNS = [
    "method", "reference", "protocol", "label_fraction", "test_set", "domain", "n_seeds", "gain", "ci_low", "ci_high",
]
METRIC_KEYS = ["protocol", "label_fraction", "test_set", "domain", "metric"]
SEED_GAIN_COLUMNS = [
    "method", "reference", *METRIC_KEYS, "n_seeds", "gain", "ci_low", "ci_high", "level", "n_positive", "supported", "note",
]
SUBGROUP_GAP_COLUMNS = [
    "method", *METRIC_KEYS, "subgroup", "reference", "n_seeds", "gap", "ci_low", "ci_high", "level", "n_positive",
    "supported", "note",
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
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # subgroup column -> value per image ("": unknown)

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


def with_subgroup(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics.csv`` rows with a ``subgroup`` column: a table written before subgroups holds whole test sets only."""
    return metrics if "subgroup" in metrics.columns else metrics.assign(subgroup=WHOLE)


def whole_test_sets(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of whole test sets and their domains (``subgroup`` ``all``), without the subgroup rows."""
    return metrics[with_subgroup(metrics)["subgroup"].to_numpy() == WHOLE]


def metric_groups(
    pred: Prediction, domain_names: list[str], min_per_class: int, notes: list[str]
) -> list[tuple[str, str, np.ndarray]]:
    """``(subgroup, domain, mask)``: the whole test set and its domains (:func:`domain_groups`), then each value of each
    subgroup column on them, where it holds at least ``min_per_class`` images of every class of the test set (else noted)."""
    domains = domain_groups(pred, domain_names)
    groups = [(WHOLE, domain, mask) for domain, mask in domains]
    classes = np.unique(pred.y)
    for column, values in pred.attributes.items():
        for value in sorted(set(values) - {""}):
            subgroup = f"{column}={value}"
            for domain, mask in domains:
                mask = mask & (values == value)
                counts = [int((pred.y[mask] == c).sum()) for c in classes]
                if min(counts) < min_per_class:
                    notes.append(
                        f"subgroup {subgroup} of test set {pred.test_set}/{domain} skipped: {counts} images of classes "
                        f"{classes.tolist()}, fewer than subgroups.min_per_class={min_per_class}"
                    )
                    continue
                groups.append((subgroup, domain, mask))
    return groups


def metric_rows(
    pred: Prediction, domain_names: list[str], n_boot: int, level: float, notes: list[str], min_per_class: int
) -> list[dict]:
    """Point values and bootstrap intervals per group of :func:`metric_groups`; a single-class group is noted and skipped."""
    rows = []
    for subgroup, domain, mask in metric_groups(pred, domain_names, min_per_class, notes):
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
            test_set=pred.test_set, domain=domain, subgroup=subgroup,
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


def seed_gain_rows(
    values: pd.DataFrame, reference: str, keys: list[str], level: float = 0.95, by: str = "method"
) -> list[dict]:
    """Paired gain over seeds of every ``by`` value (a method, or a subgroup) over ``reference`` for each combination of ``keys``.

    ``values`` is long: ``by, seed, *keys, value``; the pairing is by seed (same pretraining
    seed and label draw), see :func:`cfcl.evaluation.metrics.paired_seed_gain`.
    """
    rows = []
    for key, part in values.groupby(keys, sort=False):
        compared = {m: p.set_index("seed")["value"] for m, p in part.groupby(by, sort=True)}
        if reference not in compared:
            continue
        for name, series in compared.items():
            if name == reference:
                continue
            gain = paired_seed_gain(series, compared[reference], level)
            rows.append(dict(
                **{by: name}, reference=reference, **dict(zip(keys, key)), n_seeds=gain.n_seeds, gain=gain.mean,
                ci_low=gain.ci_low, ci_high=gain.ci_high, level=level, n_positive=gain.n_positive, supported=gain.supported,
                note=gain.note,
            ))
    return rows


def metric_seed_gains(metrics: pd.DataFrame, reference: str, level: float = 0.95) -> list[dict]:
    """``seed_gains.csv`` rows of ``metrics.csv``'s point metrics (not of their bootstrap bounds) on whole test sets."""
    whole = whole_test_sets(metrics)
    return seed_gain_rows(whole[whole["metric"].isin(POINT_METRICS)], reference, METRIC_KEYS, level)


def subgroup_gap_rows(metrics: pd.DataFrame, level: float = 0.95) -> list[dict]:
    """``subgroup_gaps.csv``: each subgroup's point metric minus its column's reference subgroup, paired by seed,
    per method, protocol, label fraction, test set and domain.

    The reference is the column's first value in text order, so the sign convention is fixed: the
    sex gap is ``sex=M`` minus ``sex=F`` (positive: the classifier does better on male images).
    """
    values = with_subgroup(metrics)
    values = values[values["metric"].isin(POINT_METRICS) & (values["subgroup"] != WHOLE)]
    rows = []
    for _, part in values.groupby(values["subgroup"].str.split("=").str[0], sort=True):
        rows += seed_gain_rows(part, min(part["subgroup"]), ["method", *METRIC_KEYS], level, by="subgroup")
    return [{"gap" if k == "gain" else k: v for k, v in row.items()} for row in rows]


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
