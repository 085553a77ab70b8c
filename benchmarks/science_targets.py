"""The science targets of docs/results.md, read from a finished run: prints one JSON line.

Reads ``RUN/eval/metrics.csv``, ``RUN/eval/domain_predictability.csv`` and ``RUN/data``
(which scanner is rare and which is out of distribution) and reports, at the lowest label
fraction of the linear probes, per pretraining seed (seed s = pretraining seed s and label
draw s):

- CF-SimCLR minus SimCLR AUROC on the OOD scanner (``transfer``: the ID probe applied to it;
  ``ood_probe``: a probe on its own labels) and on the rare ID scanner; target: mean >= 0.02
  and every seed > 0;
- scanner predictability of SimCLR minus that of CF-SimCLR; target >= 0.15;
- CF-SimCLR's OOD gain as a fraction of the oracle's (the same method with true
  counterfactuals: ``oracle``, or ``oracle-multi`` for ``cf-simclr-multi``); target >= 0.7;
- SimCLR minus the random encoder on the ID test set; target > 0;
- the same rows for SimCLR+ and the oracle, and the supervised baseline's AUROC.

    python benchmarks/science_targets.py runs/benchmark [--method cf-simclr-multi]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cfcl.data.store import ImageStore
from cfcl.layout import PREDICTABILITY, RunLayout


def auroc_table(metrics: pd.DataFrame, fraction: float, rare: str) -> pd.DataFrame:
    """AUROC per (method, seed) and comparison: ``id``, ``rare``, ``transfer``, ``ood_probe``."""
    m = metrics[(metrics.metric == "auroc") & (metrics.label_fraction == fraction)]
    picks = {
        "id": (m.protocol == "linear") & (m.test_set == "id") & (m.domain == "all"),
        "rare": (m.protocol == "linear") & (m.test_set == "id") & (m.domain == rare),
        "transfer": (m.protocol == "transfer") & (m.test_set == "ood") & (m.domain == "all"),
        "ood_probe": (m.protocol == "linear") & (m.test_set == "ood") & (m.domain == "all"),
    }
    columns = {name: m[mask].set_index(["method", "seed"])["value"] for name, mask in picks.items()}
    return pd.DataFrame(columns)


def gains(table: pd.DataFrame, method: str, reference: str) -> dict:
    """Per-seed and mean AUROC gains of ``method`` over ``reference``."""
    if method not in table.index.get_level_values(0) or reference not in table.index.get_level_values(0):
        return {}
    diff = (table.loc[method] - table.loc[reference]).dropna(how="all")
    return {
        col: {"per_seed": [round(float(v), 4) for v in diff[col]], "mean": round(float(diff[col].mean()), 4)}
        for col in diff.columns
    }


def supervised_auroc(metrics: pd.DataFrame, fraction: float) -> float | None:
    """The supervised-from-scratch baseline's ID AUROC at ``fraction`` (mean over seeds)."""
    m = metrics[
        (metrics.method == "supervised") & (metrics.metric == "auroc") & (metrics.label_fraction == fraction)
        & (metrics.test_set == "id") & (metrics.domain == "all")
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
    fraction = float(metrics[metrics.protocol == "linear"].label_fraction.min())
    table = auroc_table(metrics, fraction, rare)

    cf = gains(table, args.method, "simclr")
    oracle = gains(table, oracle_method, "simclr")
    pred = predictability.groupby("method")["balanced_accuracy"].mean()
    ood_gain = lambda g: np.mean([g["transfer"]["mean"], g["ood_probe"]["mean"]]) if g else float("nan")  # noqa: E731
    result = {
        "run": str(args.run),
        "label_fraction": fraction,
        "rare_scanner": rare,
        "seeds": sorted(int(s) for s in table.loc["simclr"].index),
        "auroc_mean": {
            method: {col: round(float(v), 4) for col, v in table.loc[method].mean().items() if not np.isnan(v)}
            for method in table.index.get_level_values(0).unique()
        },
        f"{args.method}_vs_simclr": cf,
        "simclr+_vs_simclr": gains(table, "simclr+", "simclr"),
        f"{oracle_method}_vs_simclr": oracle,
        "simclr_vs_random": gains(table, "simclr", "random"),
        "supervised_id": supervised_auroc(metrics, fraction),
        "predictability": {k: round(float(v), 4) for k, v in pred.items()},
    }
    targets = {}
    for col in ("transfer", "ood_probe", "rare"):
        if cf:
            targets[f"gain_{col}"] = cf[col]["mean"] >= 0.02 and all(v > 0 for v in cf[col]["per_seed"])
    if "simclr" in pred and args.method in pred:
        result["predictability_drop"] = round(float(pred["simclr"] - pred[args.method]), 4)
        targets["predictability_drop"] = result["predictability_drop"] >= 0.15
    if cf and oracle:
        result["oracle_fraction"] = round(float(ood_gain(cf) / ood_gain(oracle)), 3) if ood_gain(oracle) > 0 else None
        targets["oracle_fraction"] = result["oracle_fraction"] is not None and result["oracle_fraction"] >= 0.7
    vs_random = result["simclr_vs_random"]
    if vs_random:
        targets["simclr_above_random"] = vs_random["id"]["mean"] > 0
    result["targets_met"] = targets
    print(json.dumps(result))


if __name__ == "__main__":
    main()
