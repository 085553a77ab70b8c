"""Counterfactual quality metrics against hand-computed values and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from cfcl.counterfactual.quality.metrics import (
    balanced_accuracy,
    composition_mae,
    effectiveness,
    error_vs_truth,
    mae,
    mae_ratio,
    reversibility_mae,
)


def constant_images(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()


def test_mae_is_per_image():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.tensor([[[[0.1, 0.3], [0.0, 0.4]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    assert torch.allclose(mae(a, b), torch.tensor([0.2, 1.0]))
    with pytest.raises(ValueError, match="shapes differ"):
        mae(a, b[:, :, :1])


def test_balanced_accuracy_matches_sklearn():
    confusion = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    assert balanced_accuracy(confusion) == pytest.approx((3 / 4 + 2 / 4) / 2)
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 2, 0, 1, 1, 0, 2, 2, 2, 0])
    confusion = np.zeros((3, 3), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    assert balanced_accuracy(torch.as_tensor(confusion)) == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_effectiveness_hand_computed():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    result = effectiveness(probs.log(), torch.tensor([0, 0, 1, 1]), n_domains=3)
    # predictions 0, 1, 0, 1 -> recall 1/2 for both targets
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    assert result["confusion"] == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    # domain 0: positives (0.9, 0.4) vs negatives (0.6, 0.1) win 3 of 4 pairs; domain 1: (0.3, 0.8) vs (0.05, 0.5) too
    assert result["auroc"] == {0: pytest.approx(0.75), 1: pytest.approx(0.75)}
    assert result["auroc_macro"] == pytest.approx(0.75)
    single = effectiveness(probs.log(), torch.tensor([2, 2, 2, 2]), n_domains=3)
    assert single["auroc"] == {2: None} and single["auroc_macro"] is None and single["balanced_accuracy"] == 0.0


def test_composition_accumulates_drift():
    def drifting(x, pa, pa_star):
        return x + 0.02

    x = constant_images([0.1, 0.5])
    errors = composition_mae(drifting, x, {"domain": torch.tensor([0, 1])}, n_steps=10)
    assert errors.shape == (10, 2)
    assert torch.allclose(errors, (0.02 * torch.arange(1, 11)).view(10, 1).expand(10, 2), atol=1e-6)


def test_reversibility_of_a_lossy_map():
    def shift(x, pa, pa_star):
        return (x + 0.25 * (pa_star["domain"] - pa["domain"]).view(-1, 1, 1, 1)).clamp(0, 1)

    x = constant_images([0.9, 0.2])
    pa, pa_star = {"domain": torch.tensor([0, 0])}, {"domain": torch.tensor([1, 1])}
    # 0.9 -> 1.15 clamped to 1.0 -> back to 0.75 (error 0.15); 0.2 -> 0.45 -> 0.2 (error 0)
    assert torch.allclose(reversibility_mae(shift, x, pa, pa_star), torch.tensor([0.15, 0.0]), atol=1e-6)


def test_exact_invertible_map_is_reversible_and_composes():
    from support.cf_stores import gamma_cf

    x = torch.rand(3, 1, 8, 8) * 0.9 + 0.05
    pa, pa_star = {"domain": torch.tensor([0, 1, 2])}, {"domain": torch.tensor([2, 0, 1])}
    assert reversibility_mae(gamma_cf, x, pa, pa_star).max() < 1e-5
    assert composition_mae(gamma_cf, x, pa, n_steps=3).max() < 1e-6


def test_error_vs_truth_and_ratio():
    x, x_star, truth = constant_images([0.2, 0.6]), constant_images([0.45, 0.5]), constant_images([0.5, 0.2])
    errors = error_vs_truth(x, x_star, truth)
    assert torch.allclose(errors["cf"], torch.tensor([0.05, 0.3]))
    assert torch.allclose(errors["identity"], torch.tensor([0.3, 0.4]))
    assert mae_ratio(errors["cf"], errors["identity"]) == pytest.approx(0.35 / 0.7)
    assert mae_ratio(0.0, 0.0) == 0.0 and mae_ratio(0.1, 0.0) == float("inf")
