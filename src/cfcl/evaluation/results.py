"""Every table of the evaluation: its rows, its columns and its file under ``eval/`` (:func:`write_tables`).

The evaluate stage (:mod:`cfcl.evaluation.evaluate`) measures and collects :class:`Results`; this module
turns them into ``metrics.csv``, ``gains.csv``, ``variance_components.csv``, ``seed_gains.csv``,
``subgroup_gaps.csv``, ``domain_predictability.csv``, ``tsne/<method>.csv`` (+ ``tsne_<method>.png``) and
``notes.txt``, each written atomically. The report and the benchmark scripts read them with the column
lists named here.

``metrics.csv`` columns: ``method, seed, protocol, label_fraction, test_set, domain, subgroup, metric, value``.
Bootstrap intervals are extra rows whose metric is ``<metric>_ci_low`` / ``<metric>_ci_high``. ``subgroup`` is
``all`` for the whole test set (or one of its domains) and ``<column>=<value>`` (``sex=F``) for the test images
with that metadata value.

A multi-label store (``store.json`` ``findings``) is scored per finding, on the images where that finding is known:
metric ``auroc:<finding>`` (and its ``auroc_ci_low:<finding>`` / ``auroc_ci_high:<finding>``), and ``mean_auroc``,
the mean over findings, which stands where a single-label store has ``auroc`` (:data:`AUROC_METRICS`). Every
metric name is ``<metric>[:<finding>]`` (:func:`finding_metric`, :func:`metric_parts`), so every reader of the long
format (draw averages, seed gains, subgroup gaps) treats a finding's AUROC as one more metric, and a single-label
store's tables are those they always were.

Headroom on the synthetic benchmark (a store with true counterfactuals): protocol ``ceiling``, test set
``rendered`` holds, per scanner, a probe trained on the labelled training patients as that scanner renders
them and tested on the test patients it renders, the best a linear probe of these features does there; the
``robustness_gap`` rows (protocol ``linear``, test set ``rendered``) are that ceiling's AUROC minus the ID
probe's on the same images, per scanner (:func:`robustness_gap_rows`). ``balanced_accuracy_val_threshold``
scores the ID probe (binary labels) at the threshold chosen on the ID validation split, beside
``balanced_accuracy`` at the argmax.

Two kinds of gain interval, for two questions: ``gains.csv`` resamples the test images (paired
bootstrap of the seed-averaged gain: how much the test set alone moves it); ``seed_gains.csv``
is the t-interval over seeds (pretraining seed and label draw: would another seed agree?). A
gain is called supported only when its seed interval excludes 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from cfcl import atomic, layout
from cfcl.evaluation.config import EvaluateConfig
from cfcl.evaluation.metrics import (
    auroc,
    auroc_defined,
    balanced_accuracy,
    bootstrap_ci,
    finding_aurocs,
    finding_bootstrap_ci,
    paired_gain_ci,
    paired_seed_gain,
    variance_components,
)
from cfcl.plotting import save_png, tsne_figure

COLUMNS = ["method", "seed", "protocol", "label_fraction", "test_set", "domain", "subgroup", "metric", "value"]
DRAW_COLUMNS = [*COLUMNS, "draw"]  # the rows of every label draw, before each seed's draws are averaged
WHOLE = "all"  # the subgroup of every test image
RENDERED = "rendered"  # the test set of the ID test patients as every scanner renders them
CEILING = "ceiling"  # the protocol of a probe trained and tested on one scanner's renderings
VAL_THRESHOLD = "balanced_accuracy_val_threshold"  # balanced accuracy at the threshold chosen on ID validation images
ROBUSTNESS_GAP = "robustness_gap"  # a scanner's ceiling AUROC minus the ID probe's on its renderings
GAIN_COLUMNS = [
    "method",
    "reference",
    "protocol",
    "label_fraction",
    "test_set",
    "domain",
    "n_seeds",
    "gain",
    "ci_low",
    "ci_high",
]
METRIC_KEYS = ["protocol", "label_fraction", "test_set", "domain", "metric"]
SEED_GAIN_COLUMNS = [
    "method",
    "reference",
    *METRIC_KEYS,
    "n_seeds",
    "gain",
    "ci_low",
    "ci_high",
    "level",
    "n_positive",
    "supported",
    "note",
]
SUBGROUP_GAP_COLUMNS = [
    "method",
    *METRIC_KEYS,
    "subgroup",
    "reference",
    "n_seeds",
    "gap",
    "ci_low",
    "ci_high",
    "level",
    "n_positive",
    "supported",
    "note",
]
VARIANCE_COLUMNS = [
    "method",
    "reference",
    "protocol",
    "label_fraction",
    "test_set",
    "domain",
    "n_seeds",
    "n_draws",
    "sd_seed",
    "sd_draw",
    "sd_test",
    "half_width",
    "half_width_10_seeds",
    "seeds_needed",
]
RESOLVED_GAIN = 0.02  # the AUROC gain the benchmark is designed to resolve: the half-width `seeds_needed` aims at
MAX_SEEDS = 1000
MEAN_AUROC = "mean_auroc"  # a multi-label store's AUROC: the mean over its findings
AUROC_METRICS = ("auroc", MEAN_AUROC)  # the AUROC of a single-label store / of a multi-label store
POINT_METRICS = ("auroc", "balanced_accuracy", VAL_THRESHOLD, ROBUSTNESS_GAP, MEAN_AUROC)
FINDING_SEPARATOR = ":"
# Columns of ``domain_predictability.csv`` -> their metric name in ``seed_gains.csv`` (protocol ``embedding``).
INVARIANCE_MEASURES = {
    "balanced_accuracy": "domain_predictability",
    "knn_purity": "knn_purity",
    "silhouette": "silhouette",
    "cf_invariance": "cf_invariance",
}


def finding_metric(metric: str, finding: str) -> str:
    """The name of ``metric`` of one finding: ``auroc:Edema``."""
    return f"{metric}{FINDING_SEPARATOR}{finding}"


def metric_parts(name: str) -> tuple[str, str | None]:
    """``(metric, finding)`` of a metric name; the finding is None for a metric of the whole task."""
    metric, separator, finding = name.partition(FINDING_SEPARATOR)
    return metric, finding if separator else None


def point_metrics(names: pd.Series) -> pd.Series:
    """Which metric names are point values of :data:`POINT_METRICS` (of the task or of a finding), not bounds."""
    return names.str.partition(FINDING_SEPARATOR)[0].isin(POINT_METRICS)


def auroc_metric(table: pd.DataFrame) -> str:
    """The AUROC of the store that ``table`` (``metrics.csv``, ``seed_gains.csv``...) scores, as its ``metric`` names
    it: :data:`MEAN_AUROC` for a multi-label store, else ``auroc``."""
    return MEAN_AUROC if (table["metric"] == MEAN_AUROC).any() else "auroc"


@dataclass
class Prediction:
    """Scores of one trained classifier on one test set: labels ``y [N]`` and class probabilities ``prob [N, C]``,
    or for a multi-label store (``findings``: their names) its findings ``y [N, F]`` (1 / 0 / NaN missing) and each
    finding's probability ``prob [N, F]``."""

    method: str
    seed: int
    protocol: str
    label_fraction: float
    test_set: str
    y: np.ndarray
    domain: np.ndarray
    prob: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # subgroup column -> value per image ("": unknown)
    draw: int = 0  # which labelled subset of the seed (evaluate.label_draws)
    pooled: bool = True  # whether the whole test set is a population; not for the same patients under every scanner
    threshold: float | None = None  # on the class-1 probability, chosen on ID validation images (binary labels)
    findings: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return self.protocol, self.label_fraction, self.test_set

    def class_counts(self, mask: np.ndarray) -> dict:
        """The images of ``mask`` per class of the test set; with findings, per finding absent and present
        (``Edema=0``, ``Edema=1``) among those where it is known."""
        y = self.y[mask]
        if self.findings:
            return {f"{n}={v}": int((column == v).sum()) for n, column in zip(self.findings, y.T) for v in (0, 1)}
        return {c: int((y == c).sum()) for c in np.unique(self.y).tolist()}


@dataclass
class Invariance:
    """One row of ``domain_predictability.csv``: how much one method and seed's features say about the domain
    (:mod:`cfcl.evaluation.embeddings`, on equal numbers of images per domain)."""

    method: str
    seed: int
    balanced_accuracy: float  # of a linear domain classifier, mean over folds
    std: float  # over folds
    chance: float
    n_domains: int
    n_per_domain: int
    knn_purity: float
    knn_k: int
    silhouette: float
    # mean feature distance of an ID test image to its true counterfactuals on the other scanners, over the median
    # distance between different patients (NaN without true counterfactuals)
    cf_invariance: float


PREDICTABILITY_COLUMNS = [f.name for f in fields(Invariance)]


@dataclass
class TsneMap:
    """A t-SNE map of one method's features: a point per image, with its domain and label names."""

    method: str
    xy: np.ndarray  # [N, 2]
    domain: list[str]
    label: list[str]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"x": self.xy[:, 0], "y": self.xy[:, 1], "domain": self.domain, "label": self.label})


@dataclass
class Results:
    """What one evaluation measured, collected as it runs; :func:`write_tables` writes it."""

    predictions: list[Prediction] = field(default_factory=list)
    invariance: list[Invariance] = field(default_factory=list)
    maps: list[TsneMap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # everything skipped and why, in order (repeats are written once)


def domain_groups(pred: Prediction, domain_names: list[str]) -> list[tuple[str, np.ndarray]]:
    """``("all", every image)`` unless the prediction is not ``pooled`` and, when the test set spans several
    domains, each domain on its own."""
    groups = [("all", np.ones(len(pred.y), dtype=bool))] if pred.pooled else []
    present = np.unique(pred.domain)
    if len(present) > 1:
        groups += [(domain_names[d], pred.domain == d) for d in present]
    return groups


def whole_test_sets(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of whole test sets and their domains (``subgroup`` ``all``), without the subgroup rows."""
    return metrics[metrics["subgroup"].to_numpy() == WHOLE]


def metric_groups(
    pred: Prediction, domain_names: list[str], min_per_class: int, notes: list[str]
) -> list[tuple[str, str, np.ndarray]]:
    """``(subgroup, domain, mask)``: the whole test set and its domains (:func:`domain_groups`), then each value of each
    subgroup column on them, where it holds at least ``min_per_class`` images of every class of the test set (with
    findings: of every finding absent and present; else noted)."""
    domains = domain_groups(pred, domain_names)
    groups = [(WHOLE, domain, mask) for domain, mask in domains]
    for column, values in pred.attributes.items():
        for value in sorted(set(values) - {""}):
            subgroup = f"{column}={value}"
            for domain, mask in domains:
                mask = mask & (values == value)
                counts = pred.class_counts(mask)
                if min(counts.values()) < min_per_class:
                    notes.append(
                        f"subgroup {subgroup} of test set {pred.test_set}/{domain} skipped: {list(counts.values())} "
                        f"images of classes {list(counts)}, fewer than subgroups.min_per_class={min_per_class}"
                    )
                    continue
                groups.append((subgroup, domain, mask))
    return groups


def metric_rows(
    pred: Prediction, domain_names: list[str], n_boot: int, level: float, notes: list[str], min_per_class: int
) -> list[dict]:
    """Point values and bootstrap intervals per group of :func:`metric_groups` (with findings:
    :func:`finding_scores`); a single-class group (with findings: one where some finding is not both present and
    absent) is noted and skipped."""
    rows = []
    for subgroup, domain, mask in metric_groups(pred, domain_names, min_per_class, notes):
        y, prob = pred.y[mask], pred.prob[mask]
        if not auroc_defined(y):
            what = "single class" if not pred.findings else "a finding not both present and absent"
            notes.append(f"{pred.method} seed {pred.seed} {pred.protocol} {pred.test_set}/{domain}: {what}, no metrics")
            continue
        if pred.findings:
            values = finding_scores(pred.findings, y, prob, n_boot, level, pred.seed)
        else:
            values = {"auroc": auroc(y, prob), "balanced_accuracy": balanced_accuracy(y, prob.argmax(-1))}
            if pred.threshold is not None:
                values[VAL_THRESHOLD] = balanced_accuracy(y, (prob[:, 1] >= pred.threshold).astype(int))
            for metric, (low, high) in bootstrap_ci(y, prob, n_boot, level, seed=pred.seed).items():
                values[f"{metric}_ci_low"], values[f"{metric}_ci_high"] = low, high
        base = dict(
            method=pred.method,
            seed=pred.seed,
            protocol=pred.protocol,
            label_fraction=pred.label_fraction,
            test_set=pred.test_set,
            domain=domain,
            subgroup=subgroup,
            draw=pred.draw,
        )
        rows += [{**base, "metric": metric, "value": value} for metric, value in values.items()]
    return rows


def finding_scores(
    names: list[str], findings: np.ndarray, prob: np.ndarray, n_boot: int, level: float, seed: int
) -> dict[str, float]:
    """``mean_auroc`` and each finding's ``auroc:<finding>``, with their bootstrap bounds, of ``prob [N, F]`` on
    ``findings [N, F]`` (each finding on the images where it is known)."""
    aurocs = finding_aurocs(findings, prob)
    bounds, (low, high) = finding_bootstrap_ci(findings, prob, n_boot, level, seed)
    values = {MEAN_AUROC: float(aurocs.mean()), f"{MEAN_AUROC}_ci_low": low, f"{MEAN_AUROC}_ci_high": high}
    for name, value, (low, high) in zip(names, aurocs, bounds):
        values[finding_metric("auroc", name)] = float(value)
        values[finding_metric("auroc_ci_low", name)], values[finding_metric("auroc_ci_high", name)] = low, high
    return values


def robustness_gap_rows(draws: pd.DataFrame) -> pd.DataFrame:
    """``robustness_gap`` rows of :func:`metric_rows` of every label draw: per method, seed, draw, label fraction
    and scanner, the ``ceiling`` AUROC minus the ID probe's (protocol ``linear``) on the test patients as that
    scanner renders them; none without ceiling rows."""
    keys = ["method", "seed", "label_fraction", "domain", "draw"]
    auc = draws[(draws["metric"] == "auroc") & (draws["subgroup"] == WHOLE) & (draws["test_set"] == RENDERED)]
    ceiling = auc[auc["protocol"] == CEILING].set_index(keys)["value"]
    probe = auc[auc["protocol"] == "linear"].set_index(keys)["value"]
    gap = (ceiling - probe).dropna().reset_index()
    return gap.assign(protocol="linear", test_set=RENDERED, subgroup=WHOLE, metric=ROBUSTNESS_GAP)[DRAW_COLUMNS]


def average_draws(rows: pd.DataFrame) -> pd.DataFrame:
    """``metrics.csv`` from :func:`metric_rows` of every label draw: each seed's values averaged over its draws."""
    keys = [c for c in COLUMNS if c != "value"]
    return rows.groupby(keys, sort=False, dropna=False)["value"].mean().reset_index()[COLUMNS]


def gain_rows(
    preds: list[Prediction], reference: str, domain_names: list[str], n_boot: int, level: float
) -> list[dict]:
    """AUROC gain (with findings: of the mean AUROC over findings) of every method over ``reference`` averaged over
    seeds and label draws, paired bootstrap interval per domain."""
    by_key: dict[tuple, dict[str, dict[tuple[int, int], Prediction]]] = defaultdict(lambda: defaultdict(dict))
    for p in preds:
        by_key[p.key][p.method][p.seed, p.draw] = p
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
                if not auroc_defined(first.y[mask]):
                    continue
                gain, low, high = paired_gain_ci(
                    first.y[mask],
                    [seeds[s].prob[mask] for s in common],
                    [ref[s].prob[mask] for s in common],
                    n_boot,
                    level,
                    seed=common[0][0],
                )
                protocol, fraction, test_set = key
                rows.append(
                    dict(
                        method=method,
                        reference=reference,
                        protocol=protocol,
                        label_fraction=fraction,
                        test_set=test_set,
                        domain=domain,
                        n_seeds=len({seed for seed, _ in common}),
                        gain=gain,
                        ci_low=low,
                        ci_high=high,
                    )
                )
    return rows


def seed_gain_rows(
    values: pd.DataFrame, reference: str, keys: list[str], level: float = 0.95, by: str = "method"
) -> list[dict]:
    """Paired gain over seeds of every ``by`` value (a method, or a subgroup) over ``reference`` for each combination of
    ``keys``.

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
            rows.append(
                dict(
                    **{by: name},
                    reference=reference,
                    **dict(zip(keys, key)),
                    n_seeds=gain.n_seeds,
                    gain=gain.mean,
                    ci_low=gain.ci_low,
                    ci_high=gain.ci_high,
                    level=level,
                    n_positive=gain.n_positive,
                    supported=gain.supported,
                    note=gain.note,
                )
            )
    return rows


def metric_seed_gains(metrics: pd.DataFrame, reference: str, level: float = 0.95) -> list[dict]:
    """``seed_gains.csv`` rows of ``metrics.csv``'s point metrics (not of their bootstrap bounds) on whole test sets."""
    whole = whole_test_sets(metrics)
    return seed_gain_rows(whole[point_metrics(whole["metric"])], reference, METRIC_KEYS, level)


def subgroup_gap_rows(metrics: pd.DataFrame, level: float = 0.95) -> list[dict]:
    """``subgroup_gaps.csv``: each subgroup's point metric minus its column's reference subgroup, paired by seed,
    per method, protocol, label fraction, test set and domain.

    The reference is the column's first value in text order, so the sign convention is fixed: the
    sex gap is ``sex=M`` minus ``sex=F`` (positive: the classifier does better on male images).
    """
    values = metrics[point_metrics(metrics["metric"]) & (metrics["subgroup"] != WHOLE)]
    rows = []
    for _, part in values.groupby(values["subgroup"].str.split("=").str[0], sort=True):
        rows += seed_gain_rows(part, min(part["subgroup"]), ["method", *METRIC_KEYS], level, by="subgroup")
    return [{"gap" if k == "gain" else k: v for k, v in row.items()} for row in rows]


def invariance_seed_gains(table: pd.DataFrame, reference: str, test_set: str, level: float = 0.95) -> list[dict]:
    """``seed_gains.csv`` rows (protocol ``embedding``) of the invariance measures of ``domain_predictability.csv``.

    Lower is more domain-invariant, so a negative gain is a method clustering less by domain.
    """
    values = table.melt(
        id_vars=["method", "seed"], value_vars=list(INVARIANCE_MEASURES), var_name="metric", value_name="value"
    )
    values = values.dropna(subset=["value"])  # cf_invariance without true counterfactuals
    values["metric"] = values["metric"].map(INVARIANCE_MEASURES)
    rows = seed_gain_rows(values, reference, ["metric"], level)
    constant = dict(protocol="embedding", label_fraction=float("nan"), test_set=test_set, domain="all")
    return [{**row, **constant} for row in rows]


def variance_rows(draws: pd.DataFrame, gains: pd.DataFrame, reference: str, level: float = 0.95) -> list[dict]:
    """``variance_components.csv``: for each method's AUROC gain (with findings: mean AUROC) over ``reference`` on each
    test set and each of its domains (``all``: the whole set), how much of its spread comes from the pretraining
    seed, the label draw (:func:`~cfcl.evaluation.metrics.variance_components`) and the test images
    (``sd_test``: the standard error of the averaged gain from its paired bootstrap in ``gains.csv``;
    every seed shares the test set, so more seeds do not shrink it), and ``seeds_needed``: the fewest
    seeds of as many draws whose projected half-width is at most :data:`RESOLVED_GAIN`.

    ``draws`` holds :func:`metric_rows` of every label draw (``draw`` column), before :func:`average_draws`.
    """
    auc = draws[draws["metric"].isin(AUROC_METRICS) & (draws["subgroup"] == WHOLE)]
    keys = ["protocol", "label_fraction", "test_set", "domain"]
    z = float(norm.ppf((1 + level) / 2))
    rows = []
    for key, part in auc.groupby(keys, sort=False):
        ref = part[part["method"] == reference].set_index(["seed", "draw"])["value"]
        if ref.empty:
            continue
        for method, own in part[part["method"] != reference].groupby("method", sort=True):
            gain = (own.set_index(["seed", "draw"])["value"] - ref).dropna().rename("value").reset_index()
            if gain.empty:
                continue
            parts = variance_components(gain, level)
            match = gains[
                (gains["method"] == method)
                & (gains["reference"] == reference)
                & (gains[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)
            ]
            sd_test = float((match["ci_high"] - match["ci_low"]).iloc[0] / (2 * z)) if len(match) else float("nan")
            rows.append(
                dict(
                    method=method,
                    reference=reference,
                    **dict(zip(keys, key)),
                    n_seeds=parts.n_seeds,
                    n_draws=parts.n_draws,
                    sd_seed=parts.sd_seed,
                    sd_draw=parts.sd_draw,
                    sd_test=sd_test,
                    half_width=parts.half_width,
                    half_width_10_seeds=parts.projected_half_width(10, parts.n_draws, level),
                    seeds_needed=parts.seeds_needed(RESOLVED_GAIN, parts.n_draws, MAX_SEEDS, level),
                )
            )
    return rows


def as_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def write_tables(
    out: Path, results: Results, config: EvaluateConfig, domain_names: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Write every evaluation table of ``results`` into ``out`` (each atomically); returns ``metrics.csv``'s
    rows and the notes, those of the metrics (single-class or small subgroups) included, each once."""
    notes = list(results.notes)
    rows = []
    for pred in results.predictions:
        rows += metric_rows(pred, domain_names, config.n_boot, config.ci_level, notes, config.subgroups.min_per_class)
    gains = as_frame(
        gain_rows(results.predictions, config.reference_method, domain_names, config.n_boot, config.ci_level),
        GAIN_COLUMNS,
    )
    draws = as_frame(rows, DRAW_COLUMNS)
    robustness = robustness_gap_rows(draws)
    if len(robustness):
        draws = pd.concat([draws, robustness], ignore_index=True)
    metrics = average_draws(draws)
    atomic.write_text(out / layout.METRICS, metrics.to_csv(index=False))
    atomic.write_text(out / layout.GAINS, gains.to_csv(index=False))
    variance = variance_rows(draws, gains, config.reference_method, config.ci_level)
    atomic.write_text(out / layout.VARIANCE, as_frame(variance, VARIANCE_COLUMNS).to_csv(index=False))
    invariance = as_frame([asdict(row) for row in results.invariance], PREDICTABILITY_COLUMNS)
    seed_gains = metric_seed_gains(metrics, config.reference_method, config.ci_level) + invariance_seed_gains(
        invariance, config.reference_method, "+".join(config.embeddings.split), config.ci_level
    )
    atomic.write_text(out / layout.SEED_GAINS, as_frame(seed_gains, SEED_GAIN_COLUMNS).to_csv(index=False))
    gaps = subgroup_gap_rows(metrics, config.ci_level)
    atomic.write_text(out / layout.SUBGROUP_GAPS, as_frame(gaps, SUBGROUP_GAP_COLUMNS).to_csv(index=False))
    atomic.write_text(out / layout.PREDICTABILITY, invariance.to_csv(index=False))
    for tsne in results.maps:
        table = tsne.table()
        atomic.write_text(out / layout.TSNE / f"{tsne.method}.csv", table.to_csv(index=False))
        save_png(tsne_figure(table, tsne.method), out / layout.tsne_png(tsne.method))
    notes = list(dict.fromkeys(notes))
    atomic.write_text(out / layout.NOTES, "".join(f"{n}\n" for n in notes))
    return metrics, notes
