"""Counterfactual quality metrics as pure functions over tensors (images in [0, 1]).

A counterfactual function ``cf_fn(x, pa, pa_star) -> x_star`` maps images ``[B, 1, H, W]``
with parents ``pa`` (dict of tensors, ``pa["domain"]`` a LongTensor) to their counterfactuals
under the parents ``pa_star``. Per-image results are tensors ``[B]`` so callers can aggregate
them per source -> target pair.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score

Parents = dict[str, torch.Tensor]
CounterfactualFn = Callable[[torch.Tensor, Parents, Parents], torch.Tensor]


def mae(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each image pair: ``[B]``."""
    if a.shape != b.shape:
        raise ValueError(f"mae: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).abs().flatten(1).mean(dim=1)


def balanced_accuracy(confusion: np.ndarray | torch.Tensor) -> float:
    """Mean recall over the classes that occur (rows of ``confusion[true, predicted]`` with support)."""
    confusion = np.asarray(torch.as_tensor(confusion).cpu(), dtype=np.float64)
    support = confusion.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(confusion)[present] / support[present]).mean())


def effectiveness(logits: torch.Tensor, targets: torch.Tensor, n_domains: int) -> dict:
    """How well a judge assigns counterfactuals to their target domain.

    Returns the balanced accuracy over the target domains present, the one-vs-rest ROC-AUC of
    each target domain (softmax probability of that domain; None when it is the only target),
    their macro mean, and the confusion matrix ``[target][predicted]`` over all ``n_domains``.
    """
    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    y = targets.cpu().numpy()
    confusion = confusion_matrix(y, probs.argmax(axis=1), labels=np.arange(n_domains))
    auroc: dict[int, float | None] = {}
    for d in np.unique(y):
        positive = y == d
        auroc[int(d)] = float(roc_auc_score(positive, probs[:, d])) if 0 < positive.sum() < len(y) else None
    defined = [v for v in auroc.values() if v is not None]
    return {
        "balanced_accuracy": balanced_accuracy(confusion),
        "auroc": auroc,
        "auroc_macro": float(np.mean(defined)) if defined else None,
        "confusion": confusion.tolist(),
    }


def composition_mae(cf_fn: CounterfactualFn, x: torch.Tensor, pa: Parents, n_steps: int) -> torch.Tensor:
    """``[n_steps, B]``: row k is MAE(x, x after k+1 null interventions ``pa -> pa``).

    A perfect model changes nothing when nothing is changed, however often it is applied.
    """
    errors, current = [], x
    for _ in range(n_steps):
        current = cf_fn(current, pa, pa)
        errors.append(mae(x, current))
    return torch.stack(errors)


def reversibility_mae(cf_fn: CounterfactualFn, x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
    """``[B]``: MAE(x, x taken to ``pa_star`` and back to ``pa``)."""
    there = cf_fn(x, pa, pa_star)
    return mae(x, cf_fn(there, pa_star, pa))


def error_vs_truth(x: torch.Tensor, x_star: torch.Tensor, x_true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image MAE of the counterfactual and of the identity baseline against the true counterfactual."""
    return {"cf": mae(x_star, x_true), "identity": mae(x, x_true)}


def mae_ratio(cf_errors: torch.Tensor | float, identity_errors: torch.Tensor | float) -> float:
    """Mean counterfactual error over mean identity error (target: <= 0.5).

    When the identity is already exact the ratio is 0 for an exact counterfactual, else inf.
    """
    cf = float(torch.as_tensor(cf_errors, dtype=torch.float64).mean())
    identity = float(torch.as_tensor(identity_errors, dtype=torch.float64).mean())
    if identity == 0:
        return 0.0 if cf == 0 else float("inf")
    return cf / identity
