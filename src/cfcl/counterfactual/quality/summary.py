"""The ``cf_quality.json`` numbers from the per-image records of :func:`cfcl.counterfactual.quality.measure.measure`.

Pairs are (source cell, target cell); with the domain alone intervened on, cells are domains.
Pair averages are means over pairs (each pair counts once); a ``ratio`` is the mean of
MAE(x*, true x*) over the mean of MAE(x, true x*); ``rare_as_source`` / ``rare_as_target``
restrict the pairs to those from / to the rarest cell. Each intervened parent has its judge:
with one parent its numbers are ``judge_accuracy`` and ``effectiveness``, with several
``judge_accuracy_<parent>``, ``effectiveness`` {parent: ...} and targets ``effectiveness_<parent>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from cfcl.counterfactual.config import QualityTargets
from cfcl.counterfactual.quality.inputs import Intervention
from cfcl.counterfactual.quality.metrics import effectiveness, mae_ratio


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def per_parent(name: str, parents: list[str]) -> dict[str, str]:
    """The name of each parent's ``name`` (a column, a target): ``name`` itself with one parent, else
    ``name_<parent>``."""
    return {p: name if len(parents) == 1 else f"{name}_{p}" for p in parents}


def pair_table(table: pd.DataFrame, logits: dict[str, torch.Tensor], names: list[str]) -> pd.DataFrame:
    """One row per source -> target pair: n, each judge's accuracy and the mean of every measured error."""
    accuracy = per_parent("judge_accuracy", list(logits))
    table = table.assign(
        **{
            accuracy[p]: (v.argmax(dim=1).numpy() == table[f"target_{p}"].to_numpy()).astype(float)
            for p, v in logits.items()
        }
    )
    metrics = [*accuracy.values(), *(c for c in ("reversibility", "mae_cf", "mae_identity") if c in table)]
    pairs = table.groupby(["source", "target"])[metrics].mean().reset_index()
    pairs.insert(2, "n", table.groupby(["source", "target"]).size().to_numpy())
    if "mae_cf" in pairs:
        pairs["ratio"] = [mae_ratio(a, b) for a, b in zip(pairs["mae_cf"], pairs["mae_identity"])]
    pairs.insert(0, "pair", [f"{names[s]}->{names[t]}" for s, t in zip(pairs["source"], pairs["target"])])
    return pairs


def _effectiveness(targets: pd.Series, logits: torch.Tensor, names: list[str]) -> dict[str, Any]:
    eff = effectiveness(logits, torch.tensor(targets.to_numpy()), len(names))
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
            "ratio": mae_ratio(
                torch.tensor(subset["mae_cf"].to_numpy()), torch.tensor(subset["mae_identity"].to_numpy())
            ),
        }
        for name, subset in subsets.items()
    }
    return {**summaries.pop("all"), **summaries}


def summarise(
    table: pd.DataFrame,
    logits: dict[str, torch.Tensor],
    composition: torch.Tensor | None,
    sources: np.ndarray,
    intervention: Intervention,
    rare: int,
    null_steps: int,
    targets: QualityTargets,
) -> dict[str, Any]:
    """Effectiveness, pairs, composition, reversibility, truth, targets and ``passed`` (see the module docstring);
    ``sources``: the own cell of every evaluated image, ``rare``: the rarest cell."""
    names = [intervention.name(c) for c in range(int(np.prod(intervention.shape)))]
    pairs = pair_table(table, logits, names)
    judged = {p: _effectiveness(table[f"target_{p}"], v, intervention.values[p]) for p, v in logits.items()}
    result: dict[str, Any] = {
        "effectiveness": next(iter(judged.values())) if len(judged) == 1 else judged,
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
    result["targets"] = _targets(result, judged, targets)
    result["passed"] = all(t["pass"] for t in result["targets"].values())
    return result


def _targets(result: dict[str, Any], judged: dict[str, dict], targets: QualityTargets) -> dict[str, dict]:
    """``{name: {value, threshold, pass}}`` for every target that could be measured."""
    checks = {
        name: (judged[p]["balanced_accuracy"], targets.effectiveness, True)
        for p, name in per_parent("effectiveness", list(judged)).items()
    }
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
