"""The science targets of docs/results.md, read from a finished run: prints one JSON line.

Reads ``RUN/eval/metrics.csv``, ``RUN/eval/domain_predictability.csv`` and ``RUN/data``
(which scanner is rare and which is out of distribution) and reports, at the lowest label
fraction of the linear probes, every gain paired by seed (seed s = pretraining seed s and
label draw s, repeats of a seed averaged) with its mean, 95 % t-interval over seeds, n, sign
count and ``supported`` (the interval excludes 0; docs/results.md, "How gains are reported"):

- CF-SimCLR minus SimCLR AUROC on the OOD scanner (``transfer``: the ID probe applied to it;
  ``ood_probe``: a probe on its own labels) and on the rare ID scanner and, where the evaluation
  has the rendered test set, on every ID test patient as the rare and the OOD scanner render
  them (``rare_rendered``, ``ood_rendered``); target: mean >= 0.02 and supported;
- SimCLR's scanner predictability, k-NN scanner purity and silhouette minus CF-SimCLR's
  (``invariance_drop``); targets: predictability drop >= 0.15 and supported, purity drop
  above 0 and supported;
- CF-SimCLR's OOD gain as a fraction of the oracle's (the same method with true
  counterfactuals: ``oracle``, or ``oracle-multi`` for ``cf-simclr-multi``); target >= 0.7;
- SimCLR minus the random encoder, and minus the covariates-only probe, on the ID test set;
  target: above 0 and supported;
- the same rows for SimCLR+ and the oracle, and the supervised baseline's AUROC;
- per method, the sex gap (AUROC on male minus female test images, the ``subgroup_gaps.csv``
  convention) on each comparison, and each method's gap minus SimCLR's, paired by seed (no
  target: whether sex counterfactuals shrink the gap is reported, not judged); absent when the
  store has no sex subgroups.

Whole-test-set rows are those of subgroup ``all`` (a metrics.csv without the column holds only those).

    python benchmarks/science_targets.py runs/benchmark [--method cf-simclr-multi]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cfcl.data.store import ImageStore
from cfcl.evaluation.metrics import paired_seed_gain
from cfcl.evaluation.results import WHOLE
from cfcl.layout import PREDICTABILITY, RunLayout


def auroc_table(metrics: pd.DataFrame, fraction: float, rare: str, ood: str, subgroup: str = WHOLE) -> pd.DataFrame:
    """AUROC per (method, seed) and comparison: ``id``, ``rare``, ``transfer``, ``ood_probe`` and, where the
    evaluation has the rendered test set, ``rare_rendered`` and ``ood_rendered`` (every ID test patient as the
    rare and the OOD scanner render them), on ``subgroup``'s images."""
    m = metrics[(metrics.metric == "auroc") & (metrics.label_fraction == fraction) & (metrics.subgroup == subgroup)]
    picks = {
        "id": (m.protocol == "linear") & (m.test_set == "id") & (m.domain == "all"),
        "rare": (m.protocol == "linear") & (m.test_set == "id") & (m.domain == rare),
        "transfer": (m.protocol == "transfer") & (m.test_set == "ood") & (m.domain == "all"),
        "ood_probe": (m.protocol == "linear") & (m.test_set == "ood") & (m.domain == "all"),
        "rare_rendered": (m.protocol == "linear") & (m.test_set == "rendered") & (m.domain == rare),
        "ood_rendered": (m.protocol == "linear") & (m.test_set == "rendered") & (m.domain == ood),
    }
    columns = {name: m[mask].groupby(["method", "seed"])["value"].mean() for name, mask in picks.items() if mask.any()}
    return pd.DataFrame(columns)


def rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def gain_fields(method: pd.Series, reference: pd.Series) -> dict:
    """One paired gain (Series indexed by seed): per seed, mean, 95 % t-interval over seeds, n, signs, supported."""
    gain = paired_seed_gain(method, reference)
    per_seed = (method.groupby(level=0).mean() - reference.groupby(level=0).mean()).dropna()
    return {
        "per_seed": [round(float(v), 4) for v in per_seed],
        "mean": rounded(gain.mean),
        "ci_low": rounded(gain.ci_low),
        "ci_high": rounded(gain.ci_high),
        "n": gain.n_seeds,
        "signs": gain.signs,
        "supported": gain.supported,
        **({"note": gain.note} if gain.note else {}),
    }


def gains(table: pd.DataFrame, method: str, reference: str) -> dict:
    """The paired gain of ``method`` over ``reference`` for every column of ``table`` (indexed by method, seed)."""
    if method not in table.index.get_level_values(0) or reference not in table.index.get_level_values(0):
        return {}
    return {
        col: gain_fields(table.loc[method, col].dropna(), table.loc[reference, col].dropna()) for col in table.columns
    }


def sex_gaps(metrics: pd.DataFrame, fraction: float, rare: str, ood: str | None) -> tuple[dict, dict]:
    """Per method and comparison: AUROC(sex=M) - AUROC(sex=F), and that gap minus SimCLR's, both paired by seed."""
    male, female = (auroc_table(metrics, fraction, rare, ood, f"sex={s}").dropna(axis=1, how="all") for s in ("M", "F"))
    columns = [c for c in male.columns if c in female.columns]
    if not columns:
        return {}, {}
    gap = (male[columns] - female[columns]).dropna(how="all")
    methods = gap.index.get_level_values(0).unique()
    per_method = {
        m: {c: gain_fields(male.loc[m, c].dropna(), female.loc[m, c].dropna()) for c in columns} for m in methods
    }
    return per_method, {m: gains(gap, m, "simclr") for m in methods if m != "simclr"}


def met(gain: dict, at_least: float = 0.0) -> bool:
    """A gain target: the mean reaches ``at_least`` and the interval over seeds lies above 0."""
    return gain["mean"] is not None and gain["mean"] >= at_least and gain["ci_low"] is not None and gain["ci_low"] > 0


def supervised_auroc(metrics: pd.DataFrame, fraction: float) -> float | None:
    """The supervised-from-scratch baseline's ID AUROC at ``fraction`` (mean over seeds)."""
    m = metrics[
        (metrics.method == "supervised")
        & (metrics.metric == "auroc")
        & (metrics.label_fraction == fraction)
        & (metrics.test_set == "id")
        & (metrics.domain == "all")
        & (metrics.subgroup == WHOLE)
    ]
    return round(float(m.value.mean()), 4) if len(m) else None


def read_tables(run: RunLayout, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's metrics and domain predictability; exits with one line naming what is missing."""
    paths = [run.metrics, run.eval / PREDICTABILITY]
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"science_targets: {path} does not exist; pass a finished `cfcl run` folder")
    metrics, predictability = (pd.read_csv(path) for path in paths)
    present = set(metrics.loc[metrics.protocol == "linear", "method"])
    missing = [m for m in ("simclr", method) if m not in present]
    if missing:
        raise SystemExit(
            f"science_targets: {paths[0]} holds no linear-probe rows of method(s) {', '.join(missing)} "
            f"(it has {', '.join(sorted(present)) or 'none'}); the targets compare {method} with simclr"
        )
    return metrics, predictability


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `cfcl run` folder")
    parser.add_argument("--method", default="cf-simclr", help="the counterfactual method judged (default cf-simclr)")
    parser.add_argument("--oracle", help="its oracle (default: oracle-multi for cf-simclr-multi, else oracle)")
    args = parser.parse_args(argv)
    oracle_method = args.oracle or ("oracle-multi" if args.method == "cf-simclr-multi" else "oracle")
    run = RunLayout(args.run)
    metrics, predictability = read_tables(run, args.method)
    store = ImageStore.open(run.data)
    train = store.meta.loc[store.indices("train"), "domain"].value_counts()
    rare = store.domains[min((d for d in train.index if d in store.id_domains), key=lambda d: train[d])]
    ood = store.domains[store.ood_domains[0]] if store.ood_domains else None
    fraction = float(metrics[metrics.protocol == "linear"].label_fraction.min())
    table = auroc_table(metrics, fraction, rare, ood)

    cf = gains(table, args.method, "simclr")
    oracle = gains(table, oracle_method, "simclr")
    pred = predictability.groupby("method")["balanced_accuracy"].mean()
    ood_gain = lambda g: np.mean([g["transfer"]["mean"], g["ood_probe"]["mean"]]) if g else float("nan")  # noqa: E731
    result = {
        "run": str(args.run),
        "label_fraction": fraction,
        "rare_scanner": rare,
        "ood_scanner": ood,
        "seeds": sorted(int(s) for s in table.loc["simclr"].index),
        "auroc_mean": {
            method: {col: round(float(v), 4) for col, v in table.loc[method].mean().items() if not np.isnan(v)}
            for method in table.index.get_level_values(0).unique()
        },
        f"{args.method}_vs_simclr": cf,
        "simclr+_vs_simclr": gains(table, "simclr+", "simclr"),
        f"{oracle_method}_vs_simclr": oracle,
        "simclr_vs_random": gains(table, "simclr", "random"),
        "simclr_vs_covariates": gains(table, "simclr", "covariates"),
        "supervised_id": supervised_auroc(metrics, fraction),
        "predictability": {k: round(float(v), 4) for k, v in pred.items()},
    }
    result["sex_gap"], result["sex_gap_vs_simclr"] = sex_gaps(metrics, fraction, rare, ood)
    targets = {}
    for col in ("transfer", "ood_probe", "rare", "rare_rendered", "ood_rendered"):
        if col in cf:
            targets[f"gain_{col}"] = met(cf[col], 0.02)
    invariance = predictability.set_index(["method", "seed"])
    if {"simclr", args.method} <= set(pred.index):
        result["invariance_drop"] = {
            measure: gain_fields(invariance.loc["simclr", measure], invariance.loc[args.method, measure])
            for measure in ("balanced_accuracy", "knn_purity", "silhouette")
            if measure in invariance.columns
        }
        targets["predictability_drop"] = met(result["invariance_drop"]["balanced_accuracy"], 0.15)
        if "knn_purity" in invariance.columns:
            targets["clustering_drop"] = met(result["invariance_drop"]["knn_purity"])
    if cf and oracle:
        result["oracle_fraction"] = round(float(ood_gain(cf) / ood_gain(oracle)), 3) if ood_gain(oracle) > 0 else None
        targets["oracle_fraction"] = result["oracle_fraction"] is not None and result["oracle_fraction"] >= 0.7
    for baseline in ("random", "covariates"):
        if result[f"simclr_vs_{baseline}"]:
            targets[f"simclr_above_{baseline}"] = met(result[f"simclr_vs_{baseline}"]["id"])
    result["targets_met"] = targets
    print(json.dumps(result))


if __name__ == "__main__":
    main()
