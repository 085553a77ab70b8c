"""The ``cf_quality.json`` numbers from the per-image records of :func:`cfcl.counterfactual.quality_measure.measure`.

Pair averages are means over pairs (each pair counts once); a ``ratio`` is the mean of
MAE(x*, true x*) over the mean of MAE(x, true x*); ``rare_as_source`` / ``rare_as_target``
restrict the pairs to those from / to the rarest domain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from cfcl.counterfactual.config import QualityTargets
from cfcl.counterfactual.quality import effectiveness, mae_ratio


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def pair_table(table: pd.DataFrame, logits: torch.Tensor, names: list[str]) -> pd.DataFrame:
    """One row per source -> target pair: n, judge accuracy and the mean of every measured error."""
    table = table.assign(correct=(logits.argmax(dim=1).numpy() == table["target"].to_numpy()).astype(float))
    metrics = [c for c in ("correct", "reversibility", "mae_cf", "mae_identity") if c in table]
    pairs = table.groupby(["source", "target"])[metrics].mean().reset_index()
    pairs.insert(2, "n", table.groupby(["source", "target"]).size().to_numpy())
    pairs = pairs.rename(columns={"correct": "judge_accuracy"})
    if "mae_cf" in pairs:
        pairs["ratio"] = [mae_ratio(a, b) for a, b in zip(pairs["mae_cf"], pairs["mae_identity"])]
    pairs.insert(0, "pair", [f"{names[s]}->{names[t]}" for s, t in zip(pairs["source"], pairs["target"])])
    return pairs


def _effectiveness(table: pd.DataFrame, logits: torch.Tensor, names: list[str]) -> dict[str, Any]:
    eff = effectiveness(logits, torch.tensor(table["target"].to_numpy()), len(names))
    return {
        "balanced_accuracy": eff["balanced_accuracy"],
        "auroc_macro": eff["auroc_macro"],
        "auroc": {names[d]: v for d, v in eff["auroc"].items()},
        "confusion": {"labels": names, "matrix": eff["confusion"]},
    }


def _composition(composition: torch.Tensor, sources: np.ndarray, names: list[str], null_steps: int) -> dict[str, Any]:
    per_source = {names[d]: float(composition[-1, torch.as_tensor(sources == d)].mean()) for d in np.unique(sources)}
    return {
        "mae_1": float(composition[0].mean()),
        f"mae_{null_steps}": float(composition[-1].mean()),
        "per_source": per_source,
    }


def _truth(subsets: dict[str, pd.DataFrame]) -> dict[str, Any]:
    summaries = {
        name: {
            "mae_cf": _mean(subset["mae_cf"]),
            "mae_identity": _mean(subset["mae_identity"]),
            "ratio": mae_ratio(torch.tensor(subset["mae_cf"].to_numpy()), torch.tensor(subset["mae_identity"].to_numpy())),
        }
        for name, subset in subsets.items()
    }
    return {**summaries.pop("all"), **summaries}


def summarise(
    table: pd.DataFrame,
    logits: torch.Tensor,
    composition: torch.Tensor | None,
    sources: np.ndarray,
    names: list[str],
    rare: int,
    null_steps: int,
    targets: QualityTargets,
) -> dict[str, Any]:
    """Effectiveness, pairs, composition, reversibility, truth, targets and ``passed`` (see the module docstring)."""
    pairs = pair_table(table, logits, names)
    result: dict[str, Any] = {
        "effectiveness": _effectiveness(table, logits, names),
        "pairs": pairs.to_dict(orient="records"),
    }
    subsets = {
        "all": pairs,
        "rare_as_source": pairs[pairs["source"] == rare],
        "rare_as_target": pairs[pairs["target"] == rare],
    }
    if composition is not None:
        result["composition"] = _composition(composition, sources, names, null_steps)
        result["reversibility"] = {
            "mae": _mean(pairs["reversibility"]),
            "rare_as_source": _mean(subsets["rare_as_source"]["reversibility"]),
            "rare_as_target": _mean(subsets["rare_as_target"]["reversibility"]),
        }
    else:
        result["composition"] = result["reversibility"] = None
    result["truth"] = _truth(subsets) if "mae_cf" in pairs else None
    result["targets"] = _targets(result, targets)
    result["passed"] = all(t["pass"] for t in result["targets"].values())
    return result


def _targets(result: dict[str, Any], targets: QualityTargets) -> dict[str, dict]:
    """``{name: {value, threshold, pass}}`` for every target that could be measured."""
    checks = {"effectiveness": (result["effectiveness"]["balanced_accuracy"], targets.effectiveness, True)}
    if result["truth"] is not None:
        checks["mae_ratio"] = (result["truth"]["ratio"], targets.mae_ratio, False)
        checks["mae_ratio_rare_as_source"] = (result["truth"]["rare_as_source"]["ratio"], targets.mae_ratio, False)
        checks["mae_ratio_rare_as_target"] = (result["truth"]["rare_as_target"]["ratio"], targets.mae_ratio, False)
    if result["reversibility"] is not None:
        checks["reversibility"] = (result["reversibility"]["mae"], targets.reversibility, False)
    return {
        name: {
            "value": value,
            "threshold": threshold,
            "pass": bool(value is not None and (value >= threshold if higher else value <= threshold)),
        }
        for name, (value, threshold, higher) in checks.items()
    }
