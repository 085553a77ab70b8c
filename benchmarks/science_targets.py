"""The science targets of docs/results.md, read from a finished run: prints one JSON line.

Reads ``RUN/eval/metrics.csv``, ``RUN/eval/domain_predictability.csv`` and ``RUN/data``
(which scanner is rare and which is out of distribution) and reports, at the lowest label
fraction of the linear probes, every gain paired by seed (seed s = pretraining seed s and
label draw s, repeats of a seed averaged) with its mean, 95 % t-interval, n, sign count and
``supported`` (the interval excludes 0; docs/results.md, "How gains are reported").

The unit of replication is the seed in a run of one data draw. A run of several draws of the
synthetic benchmark (``draws``: ``RUN/draw-<d>/``, each a whole run) is read draw by draw: each
gain is paired by seed within a draw and averaged over the draw's seeds, and its interval is the
t-interval over draws (n = the number of draws, ``per_draw``; docs/results.md, "Replicates over
data draws"). Every draw must hold the same methods.

- The primary endpoints (:data:`PRIMARY_ENDPOINTS`), CF-SimCLR against SimCLR: the reduction of
  the robustness gap (SimCLR's minus CF-SimCLR's; the gap is a scanner's ceiling AUROC minus the
  ID probe's on its renderings) on the rare ID scanner and on the OOD scanner, and the AUROC gain
  on both scanners' renderings of the ID test patients, on the OOD scanner with the ID probe
  (``transfer``) and with a probe on its own labels (``ood_probe``). Each has its paired t-test's
  p, its Holm-adjusted p over the primary endpoints and the interval at its Holm level
  (1 - 0.05 / (m - rank + 1), rank 1 the smallest p); ``supported`` = Holm-adjusted p < 0.05 and
  a positive mean. A run lacking the rendered test set or its ceiling probes is refused.
  ``primary.decision`` is the preregistered verdict on the claim: ``supported`` when both
  reductions of the gap are, ``partly supported`` when one is, ``not supported`` when neither is
  while the positive control holds (the oracle's reductions, intervals above 0), else undecided.
- Secondary, unadjusted, where the run has the methods: the same endpoints against SimCLR of every
  other pretrained method of the run (in the deciding run: cf-simclr-multi, simclr+, the oracles,
  simclr-multi), the judged method against its oracle, and cf-simclr-multi against simclr-multi.
- CF-SimCLR minus SimCLR AUROC on the OOD scanner (``transfer``: the ID probe applied to it;
  ``ood_probe``: a probe on its own labels), on the rare ID scanner and on every ID test patient
  as the rare and the OOD scanner render them (``rare_rendered``, ``ood_rendered``); target: mean
  >= 0.02 and supported;
- SimCLR's scanner predictability, k-NN scanner purity, silhouette and ``cf_invariance`` minus
  CF-SimCLR's (``invariance_drop``; every pretrained method's: ``invariance_drop_vs_simclr``);
  targets: predictability drop >= 0.15 and supported, purity drop above 0 and supported;
- CF-SimCLR's OOD gain as a fraction of the oracle's (the same method with true
  counterfactuals: ``oracle``, or ``oracle-multi`` for ``cf-simclr-multi``); target >= 0.7;
- SimCLR minus the random encoder, and minus the covariates-only probe, on the ID test set;
  target: above 0 and supported;
- the same rows for every other pretrained method of the run, and the supervised baseline's AUROC;
- per method, the sex gap (AUROC on male minus female test images, the ``subgroup_gaps.csv``
  convention) on each comparison, and each method's gap minus SimCLR's, paired by seed (no
  target: whether sex counterfactuals shrink the gap is reported, not judged); absent when the
  store has no sex subgroups.

Whole-test-set rows are those of subgroup ``all`` (a metrics.csv without the column holds only those).

``--reference`` compares with another method than SimCLR: ``--method cf-dino --oracle oracle-dino
--reference dino`` judges the DINO family the same way (every "SimCLR" above reads "the reference").

``--markdown`` prints the primary endpoints, the verdict and the secondary comparisons as the
Markdown tables of docs/results.md instead of the JSON line.

    python benchmarks/science_targets.py runs/benchmark_decide [--method cf-simclr-multi] [--markdown]
    python benchmarks/science_targets.py runs/benchmark_dino --method cf-dino --oracle oracle-dino --reference dino
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ttest_1samp

from cfcl.data.store import ImageStore
from cfcl.evaluation.metrics import seed_interval
from cfcl.evaluation.results import RENDERED, ROBUSTNESS_GAP, WHOLE
from cfcl.layout import PREDICTABILITY, RunLayout

# The primary endpoints, CF-SimCLR against SimCLR at the lowest label fraction: name -> (column of the figure
# table, sign). Sign +1: CF-SimCLR's value minus SimCLR's (an AUROC gain); -1: SimCLR's minus CF-SimCLR's (the
# reduction of a robustness gap). Either way a positive value is the claim.
PRIMARY_ENDPOINTS: dict[str, tuple[str, int]] = {
    "gap_reduction_rare": ("gap_rare", -1),
    "gap_reduction_ood": ("gap_ood", -1),
    "gain_rare_rendered": ("rare_rendered", 1),
    "gain_ood_rendered": ("ood_rendered", 1),
    "gain_transfer": ("transfer", 1),
    "gain_ood_probe": ("ood_probe", 1),
}
ALPHA = 0.05  # the family-wise error rate of the primary endpoints
BASELINES = ("random", "covariates")  # the probes of no pretrained encoder, which the reference must beat
INVARIANCE_MEASURES = ("balanced_accuracy", "knn_purity", "silhouette", "cf_invariance")
DECIDING_PRESET = "benchmark_decide"  # the run preset whose evaluation has everything the primary endpoints read


def auroc_table(metrics: pd.DataFrame, fraction: float, rare: str, ood: str, subgroup: str = WHOLE) -> pd.DataFrame:
    """AUROC per (method, draw, seed) and comparison: ``id``, ``rare``, ``transfer``, ``ood_probe`` and, where the
    evaluation has the rendered test set, ``rare_rendered`` and ``ood_rendered`` (every ID test patient as the
    rare and the OOD scanner render them), on ``subgroup``'s images."""
    m = metrics[(metrics.metric == "auroc") & (metrics.label_fraction == fraction) & (metrics.subgroup == subgroup)]
    picks = {
        "id": (m.protocol == "linear") & (m.test_set == "id") & (m.domain == "all"),
        "rare": (m.protocol == "linear") & (m.test_set == "id") & (m.domain == rare),
        "transfer": (m.protocol == "transfer") & (m.test_set == "ood") & (m.domain == "all"),
        "ood_probe": (m.protocol == "linear") & (m.test_set == "ood") & (m.domain == "all"),
        "rare_rendered": (m.protocol == "linear") & (m.test_set == RENDERED) & (m.domain == rare),
        "ood_rendered": (m.protocol == "linear") & (m.test_set == RENDERED) & (m.domain == ood),
    }
    return _columns(m, picks)


def gap_table(metrics: pd.DataFrame, fraction: float, rare: str, ood: str) -> pd.DataFrame:
    """The robustness gap per (method, draw, seed) on the rare ID scanner's and the OOD scanner's renderings
    (``gap_rare``, ``gap_ood``)."""
    m = metrics[
        (metrics.metric == ROBUSTNESS_GAP)
        & (metrics.label_fraction == fraction)
        & (metrics.subgroup == WHOLE)
        & (metrics.protocol == "linear")
        & (metrics.test_set == RENDERED)
    ]
    return _columns(m, {"gap_rare": m.domain == rare, "gap_ood": m.domain == ood})


def _columns(metrics: pd.DataFrame, picks: dict[str, pd.Series]) -> pd.DataFrame:
    """One column per pick: the mean value of its rows per (method, draw, seed); picks without rows left out."""
    keys = ["method", "draw", "seed"]
    return pd.DataFrame(
        {name: metrics[mask].groupby(keys)["value"].mean() for name, mask in picks.items() if mask.any()}
    )


def invariance_drops(predictability: pd.DataFrame, methods: list[str], reference: str, unit: str) -> dict:
    """Per method: the reference's scanner predictability, k-NN scanner purity, silhouette by scanner and
    ``cf_invariance`` (feature distance to the true counterfactuals over that between patients) minus the
    method's, paired like a gain (positive: the scanner shows less in the method's features); measures the
    evaluation did not compute are left out."""
    table = predictability.set_index(["method", "draw", "seed"]).sort_index()
    present = set(table.index.get_level_values(0))
    if reference not in present:
        return {}
    measures = [m for m in INVARIANCE_MEASURES if m in table.columns and table[m].notna().any()]
    return {
        method: {m: gain_fields(table.loc[reference, m], table.loc[method, m], unit) for m in measures}
        for method in methods
        if method in present
    }


def rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def paired_gains(method: pd.Series, reference: pd.Series) -> pd.Series:
    """``method - reference`` (Series indexed by draw and seed, repeats averaged) paired by seed within each draw."""
    return (method.groupby(level=[0, 1]).mean() - reference.groupby(level=[0, 1]).mean()).dropna()


def per_unit(paired: pd.Series, unit: str) -> pd.Series:
    """Gains per draw and seed per unit of replication: per seed (``unit`` seed: one draw), or each draw's seeds
    averaged (``unit`` draw)."""
    return paired.groupby(level=0 if unit == "draw" else 1).mean()


def spread_over_draws(paired: pd.Series) -> dict:
    """Where a gain's spread over draws comes from (``paired``: per draw and seed): the SD of the draws' means, the
    pooled SD of one seed's gain within a draw, and the SD the draw itself adds (its patients, test sets and
    generator) by the method of moments, sqrt(max(0, SD of the means^2 - pooled variance / seeds per draw))."""
    by_draw = paired.groupby(level=0)
    sd_means = float(by_draw.mean().std(ddof=1))
    pooled = float(np.sqrt((by_draw.var(ddof=1) * (by_draw.size() - 1)).sum() / (by_draw.size() - 1).sum()))
    seeds = float(by_draw.size().mean())
    return {
        "sd_draw_means": rounded(sd_means),
        "sd_seed_within_draw": rounded(pooled),
        "sd_draw_added": rounded(float(np.sqrt(max(0.0, sd_means**2 - pooled**2 / seeds)))),
    }


def interval_fields(values: pd.Series, unit: str, level: float = 0.95) -> dict:
    """A gain per unit: the units' values, mean, t-interval over units at ``level``, n, signs, supported."""
    gain = seed_interval(values, level)
    return {
        f"per_{unit}": [round(float(v), 4) for v in values],
        "mean": rounded(gain.mean),
        "ci_low": rounded(gain.ci_low),
        "ci_high": rounded(gain.ci_high),
        "n": gain.n_seeds,
        "signs": gain.signs,
        "supported": gain.supported,
        **({"note": gain.note.replace("seed", unit)} if gain.note else {}),
    }


def gain_fields(method: pd.Series, reference: pd.Series, unit: str) -> dict:
    """One paired gain (Series indexed by draw and seed): :func:`interval_fields` of its gains :func:`per_unit`."""
    return interval_fields(per_unit(paired_gains(method, reference), unit), unit)


def gains(table: pd.DataFrame, method: str, reference: str, unit: str) -> dict:
    """The paired gain of ``method`` over ``reference`` for every column of ``table`` (indexed by method, draw,
    seed)."""
    if method not in table.index.get_level_values(0) or reference not in table.index.get_level_values(0):
        return {}
    return {
        col: gain_fields(table.loc[method, col].dropna(), table.loc[reference, col].dropna(), unit)
        for col in table.columns
    }


def endpoint_pairs(table: pd.DataFrame, method: str, reference: str) -> dict[str, pd.Series]:
    """Each primary endpoint of ``method`` against ``reference`` per draw and seed, signed so that positive is the
    claim."""
    values = {}
    for name, (column, sign) in PRIMARY_ENDPOINTS.items():
        ours, theirs = (table.loc[m, column].dropna() for m in (method, reference))
        values[name] = paired_gains(ours, theirs) if sign > 0 else paired_gains(theirs, ours)
    return values


def endpoints(table: pd.DataFrame, method: str, reference: str, unit: str) -> dict:
    """The primary endpoints of ``method`` against ``reference``, each with its unadjusted interval; empty
    when the run lacks either method."""
    if not {method, reference} <= set(table.index.get_level_values(0)):
        return {}
    pairs = endpoint_pairs(table, method, reference)
    return {name: interval_fields(per_unit(v, unit), unit) for name, v in pairs.items()}


def holm(p_values: list[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down over ``p_values``: each one's adjusted p (the running maximum of (m - rank + 1) * p in
    rank order, at most 1) and the level of its adjusted interval, 1 - alpha / (m - rank + 1); rank 1 is the
    smallest p, and a p that could not be computed (NaN) counts as 1."""
    p = np.nan_to_num(np.asarray(p_values, dtype=float), nan=1.0)
    order = np.argsort(p, kind="stable")
    factors = len(p) - np.arange(len(p))  # m - rank + 1
    adjusted, levels = np.empty(len(p)), np.empty(len(p))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    levels[order] = 1 - alpha / factors
    return adjusted, levels


def primary_endpoints(table: pd.DataFrame, method: str, reference: str, unit: str) -> dict:
    """The primary endpoints of ``method`` against ``reference`` with their paired t-tests, Holm-adjusted over the
    endpoints: p, adjusted p, the interval at the Holm level and ``supported`` (adjusted p < alpha, mean > 0); over
    draws also where the spread comes from (:func:`spread_over_draws`)."""
    pairs = endpoint_pairs(table, method, reference)
    values = {name: per_unit(v, unit) for name, v in pairs.items()}
    p = [ttest_1samp(v, 0.0).pvalue if len(v) > 1 else np.nan for v in values.values()]
    adjusted, levels = holm(p)
    result = {}
    for (name, v), p_value, p_holm, level in zip(values.items(), p, adjusted, levels):
        fields = interval_fields(v, unit)
        at_level = seed_interval(v, level)
        result[name] = {
            **fields,
            "supported_unadjusted": fields["supported"],
            "p": rounded(p_value),
            "p_holm": rounded(p_holm) if not np.isnan(p_value) else None,
            "holm_level": round(float(level), 6),
            "holm_ci_low": rounded(at_level.ci_low),
            "holm_ci_high": rounded(at_level.ci_high),
            "supported": bool(not np.isnan(p_value) and p_holm < ALPHA and fields["mean"] > 0),
            **({"spread": spread_over_draws(pairs[name])} if unit == "draw" and len(v) > 1 else {}),
        }
    return result


def decision(primary: dict, control: dict) -> str:
    """The preregistered verdict on the claim (docs/results.md, "Preregistration of the deciding run"): supported
    when both reductions of the robustness gap (rare, OOD) are, partly when one is, not supported when neither is
    while the positive control holds (the oracle's reductions, unadjusted, intervals above 0), else undecided."""
    reductions = [primary[name]["supported"] for name in ("gap_reduction_rare", "gap_reduction_ood")]
    if all(reductions):
        return "supported"
    if any(reductions):
        return "partly supported"
    held = control and all(met(control[name]) for name in ("gap_reduction_rare", "gap_reduction_ood"))
    return "not supported" if held else "undecided: the positive control fails"


def sex_gaps(
    metrics: pd.DataFrame, fraction: float, rare: str, ood: str | None, reference: str, unit: str
) -> tuple[dict, dict]:
    """Per method and comparison: AUROC(sex=M) - AUROC(sex=F), and that gap minus ``reference``'s, both paired by
    seed."""
    male, female = (auroc_table(metrics, fraction, rare, ood, f"sex={s}").dropna(axis=1, how="all") for s in ("M", "F"))
    columns = [c for c in male.columns if c in female.columns]
    if not columns:
        return {}, {}
    gap = (male[columns] - female[columns]).dropna(how="all")
    methods = gap.index.get_level_values(0).unique()
    per_method = {
        m: {c: gain_fields(male.loc[m, c].dropna(), female.loc[m, c].dropna(), unit) for c in columns} for m in methods
    }
    return per_method, {m: gains(gap, m, reference, unit) for m in methods if m != reference}


def met(gain: dict, at_least: float = 0.0) -> bool:
    """A gain target: the mean reaches ``at_least`` and the interval lies above 0."""
    return gain["mean"] is not None and gain["mean"] >= at_least and gain["ci_low"] is not None and gain["ci_low"] > 0


def supervised_auroc(metrics: pd.DataFrame, fraction: float) -> float | None:
    """The supervised-from-scratch baseline's ID AUROC at ``fraction`` (mean over draws and seeds)."""
    m = metrics[
        (metrics.method == "supervised")
        & (metrics.metric == "auroc")
        & (metrics.label_fraction == fraction)
        & (metrics.test_set == "id")
        & (metrics.domain == "all")
        & (metrics.subgroup == WHOLE)
    ]
    return round(float(m.value.mean()), 4) if len(m) else None


def read_tables(run: RunLayout, method: str, reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run folder's metrics and domain predictability; exits with one line naming what is missing."""
    paths = [run.metrics, run.eval / PREDICTABILITY]
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"science_targets: {path} does not exist; pass a finished `cfcl run` folder")
    metrics, predictability = (pd.read_csv(path) for path in paths)
    present = set(metrics.loc[metrics.protocol == "linear", "method"])
    missing = [m for m in (reference, method) if m not in present]
    if missing:
        raise SystemExit(
            f"science_targets: {paths[0]} holds no linear-probe rows of method(s) {', '.join(missing)} "
            f"(it has {', '.join(sorted(present)) or 'none'}); the targets compare {method} with {reference}"
        )
    needed = {
        f"rendered test-set rows (test_set '{RENDERED}')": metrics.test_set == RENDERED,
        f"{ROBUSTNESS_GAP} rows (the ceiling probes of the rendered test set)": metrics.metric == ROBUSTNESS_GAP,
    }
    for what, rows in needed.items():
        if not rows.any():
            raise SystemExit(
                f"science_targets: {paths[0]} holds no {what}, which the primary endpoints need; a synthetic "
                f"benchmark run evaluated with evaluate.rendered_test: true makes them (cfcl run {DECIDING_PRESET})"
            )
    return metrics, predictability


def scanners(run: RunLayout) -> tuple[str, str | None]:
    """The rare ID scanner (fewest training images) and the OOD scanner of a run's store."""
    store = ImageStore.open(run.data)
    train = store.meta.loc[store.indices("train"), "domain"].value_counts()
    rare = store.domains[min((d for d in train.index if d in store.id_domains), key=lambda d: train[d])]
    return rare, store.domains[store.ood_domains[0]] if store.ood_domains else None


def read_run(root: Path, method: str, reference: str) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, str | None], str]:
    """The metrics and predictability of every draw of the run ``root`` (column ``draw``; one draw, labelled 0,
    without ``draw-<d>/`` folders), its scanners and its unit of replication (``draw`` or ``seed``); exits with
    one line when a draw lacks what the others have."""
    draws = RunLayout(root).draws()
    folders = draws or {0: RunLayout(root)}
    tables = {d: read_tables(run, method, reference) for d, run in folders.items()}
    found = {d: scanners(run) for d, run in folders.items()}
    if len(set(found.values())) > 1:
        raise SystemExit(f"science_targets: the draws of {root} differ in their rare and OOD scanners: {found}")
    methods = {d: frozenset(metrics.loc[metrics.protocol == "linear", "method"]) for d, (metrics, _) in tables.items()}
    every = frozenset.union(*methods.values())
    for d, present in methods.items():
        if present != every:
            raise SystemExit(
                f"science_targets: {folders[d].metrics} holds no linear-probe rows of method(s) "
                f"{', '.join(sorted(every - present))}, which other draws of {root} have; every draw evaluates the "
                "same methods"
            )
    metrics, predictability = (pd.concat([t[i].assign(draw=d) for d, t in tables.items()]) for i in (0, 1))
    return metrics, predictability, next(iter(found.values())), "draw" if draws else "seed"


def _interval(fields: dict, low: str = "ci_low", high: str = "ci_high") -> str:
    """``+0.012 [-0.003, +0.027]``; the mean alone without an interval."""
    if fields.get("mean") is None:
        return "n/a"
    if fields.get(low) is None:
        return f"{fields['mean']:+.3f}"
    return f"{fields['mean']:+.3f} [{fields[low]:+.3f}, {fields[high]:+.3f}]"


def markdown(result: dict) -> str:
    """The primary endpoints, the verdict and the secondary comparisons as Markdown tables (the docs' tables)."""
    primary = result["primary"]
    endpoints = primary["endpoints"]
    n = next(iter(endpoints.values()))["n"]
    unit = f"{n} {result['unit']}s"
    lines = [
        f"Primary endpoints: {primary['method']} against {primary['reference']} at "
        f"{result['label_fraction']:g} of the labels, over {unit} (Holm over {len(endpoints)}).",
        "",
        "| endpoint | mean [95 % interval] | interval at the Holm level | p | Holm p | supported |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in endpoints.items():
        p, p_holm = ("n/a" if v is None else f"{v:.4f}" for v in (e["p"], e["p_holm"]))
        holm = _interval(e, "holm_ci_low", "holm_ci_high")
        lines.append(f"| {name} | {_interval(e)} | {holm} | {p} | {p_holm} | {'yes' if e['supported'] else 'no'} |")
    lines += ["", f"Decision: {primary['decision']}.", ""]
    if all("spread" in e for e in endpoints.values()):
        lines += [
            "Where the spread comes from (SD of the draws' means; pooled SD of one seed's gain within a draw; SD the "
            "draw adds beyond its seeds):",
            "",
            "| endpoint | SD of the draws' means | SD of a seed within a draw | SD the draw adds |",
            "|---|---|---|---|",
        ]
        for name, e in endpoints.items():
            spread = e["spread"]
            cells = (spread["sd_draw_means"], spread["sd_seed_within_draw"], spread["sd_draw_added"])
            lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        lines.append("")
    names = list(PRIMARY_ENDPOINTS)
    lines += [
        f"Secondary comparisons over {unit} (unadjusted 95 % intervals):",
        "",
        "| comparison | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for comparison, fields in result["secondary"].items():
        if fields:
            cells = " | ".join(_interval(fields[name]) for name in names)
            lines.append(f"| {comparison.replace('_vs_', ' − ')} | {cells} |")
    drops = result.get(f"invariance_drop_vs_{primary['reference']}", {})
    measures = list(next(iter(drops.values()), {}))
    if measures:
        lines += [
            "",
            f"The scanner in the embedding, {primary['reference']}'s minus each method's over {unit} (unadjusted 95 % "
            "intervals; positive: the scanner shows less):",
            "",
            "| method | " + " | ".join(measures) + " |",
            "|---|" + "---|" * len(measures),
        ]
        for method, fields in drops.items():
            lines.append(f"| {method} | " + " | ".join(_interval(fields[m]) for m in measures) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `cfcl run` folder (of one draw, or holding draw-<d>/)")
    parser.add_argument("--method", default="cf-simclr", help="the counterfactual method judged (default cf-simclr)")
    parser.add_argument("--oracle", help="its oracle (default: oracle-multi for cf-simclr-multi, else oracle)")
    parser.add_argument("--reference", default="simclr", help="the method it is compared with (default simclr)")
    parser.add_argument("--markdown", action="store_true", help="print the docs' tables instead of the JSON line")
    args = parser.parse_args(argv)
    oracle_method = args.oracle or ("oracle-multi" if args.method == "cf-simclr-multi" else "oracle")
    ref = args.reference
    metrics, predictability, (rare, ood), unit = read_run(args.run, args.method, ref)
    fraction = float(metrics[metrics.protocol == "linear"].label_fraction.min())
    auroc, robustness_gap = auroc_table(metrics, fraction, rare, ood), gap_table(metrics, fraction, rare, ood)
    table = auroc.join(robustness_gap, how="outer")
    run_methods = set(table.index.get_level_values(0))
    if args.oracle and args.oracle not in run_methods:
        raise SystemExit(
            f"science_targets: {args.run} holds no linear-probe rows of the oracle {args.oracle}; a run listing it "
            f"in methods makes them (cfcl run {DECIDING_PRESET} or benchmark_science)"
        )
    # every pretrained method of the run beside the judged one and the reference (alphabetical)
    others = [m for m in auroc.index.get_level_values(0).unique() if m not in (args.method, ref, *BASELINES)]

    compared = {m: gains(auroc, m, ref, unit) for m in (args.method, *others)}
    cf, oracle = compared[args.method], compared.get(oracle_method, {})
    pred = predictability.groupby("method")["balanced_accuracy"].mean()
    ood_gain = lambda g: np.mean([g["transfer"]["mean"], g["ood_probe"]["mean"]]) if g else float("nan")  # noqa: E731
    ref_units = auroc.loc[ref].index
    result = {
        "run": str(args.run),
        "unit": unit,
        **({"draws": sorted(int(d) for d in ref_units.get_level_values(0).unique())} if unit == "draw" else {}),
        "label_fraction": fraction,
        "rare_scanner": rare,
        "ood_scanner": ood,
        "seeds": sorted(int(s) for s in ref_units.get_level_values(1).unique()),
        "auroc_mean": {
            method: {col: round(float(v), 4) for col, v in auroc.loc[method].mean().items() if not np.isnan(v)}
            for method in auroc.index.get_level_values(0).unique()
        },
        "robustness_gap_mean": {
            method: {col: round(float(v), 4) for col, v in robustness_gap.loc[method].mean().items()}
            for method in robustness_gap.index.get_level_values(0).unique()
        },
        "primary": {"method": args.method, "reference": ref, "alpha": ALPHA, "correction": "holm"},
        "secondary": {
            **{f"{m}_vs_{ref}": endpoints(table, m, ref, unit) for m in others},
            **(
                {f"{args.method}_vs_{oracle_method}": endpoints(table, args.method, oracle_method, unit)}
                if oracle_method in run_methods
                else {}
            ),
            **(
                {"cf-simclr-multi_vs_simclr-multi": endpoints(table, "cf-simclr-multi", "simclr-multi", unit)}
                if {"cf-simclr-multi", "simclr-multi"} <= run_methods
                else {}
            ),
        },
        **{f"{m}_vs_{ref}": gain for m, gain in compared.items()},
        **{f"{ref}_vs_{baseline}": gains(auroc, ref, baseline, unit) for baseline in BASELINES},
        "supervised_id": supervised_auroc(metrics, fraction),
        "predictability": {k: round(float(v), 4) for k, v in pred.items()},
    }
    result["primary"]["endpoints"] = primary_endpoints(table, args.method, ref, unit)
    result["primary"]["decision"] = decision(
        result["primary"]["endpoints"], result["secondary"].get(f"{oracle_method}_vs_{ref}", {})
    )
    result["sex_gap"], result[f"sex_gap_vs_{ref}"] = sex_gaps(metrics, fraction, rare, ood, ref, unit)
    targets = {}
    for col in ("transfer", "ood_probe", "rare", "rare_rendered", "ood_rendered"):
        if col in cf:
            targets[f"gain_{col}"] = met(cf[col], 0.02)
    drops = invariance_drops(predictability, [args.method, *others], ref, unit)
    if args.method in drops:
        result["invariance_drop"] = drops[args.method]
        result[f"invariance_drop_vs_{ref}"] = drops
        targets["predictability_drop"] = met(result["invariance_drop"]["balanced_accuracy"], 0.15)
        if "knn_purity" in drops[args.method]:
            targets["clustering_drop"] = met(result["invariance_drop"]["knn_purity"])
    if cf and oracle:
        result["oracle_fraction"] = round(float(ood_gain(cf) / ood_gain(oracle)), 3) if ood_gain(oracle) > 0 else None
        targets["oracle_fraction"] = result["oracle_fraction"] is not None and result["oracle_fraction"] >= 0.7
    for baseline in BASELINES:
        if result[f"{ref}_vs_{baseline}"]:
            targets[f"{ref}_above_{baseline}"] = met(result[f"{ref}_vs_{baseline}"]["id"])
    result["targets_met"] = targets
    print(markdown(result) if args.markdown else json.dumps(result))


if __name__ == "__main__":
    main()
