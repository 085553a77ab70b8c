"""Fine-tuning's multi-label loss: per-finding binary cross-entropy, class-weighted, missing findings masked out."""

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from cfcl.evaluation.finetune_encoder import finding_weights, masked_bce


def test_finding_weights_are_scikit_learns_balanced_weights_over_the_known_images_of_each_finding():
    findings = np.array([[1, 0], [0, np.nan], [0, 1], [0, np.nan], [1, 0], [0, 0]], dtype=float)
    weights = finding_weights(findings)
    for f, column in enumerate(findings.T):
        known = column[~np.isnan(column)]
        expected = compute_class_weight("balanced", classes=np.array([0.0, 1.0]), y=known)
        np.testing.assert_allclose(weights[:, f].numpy(), expected, rtol=1e-6)


def test_masked_bce_is_the_weighted_loss_of_the_known_findings_and_missing_ones_get_no_gradient():
    rng = np.random.default_rng(0)
    findings = (rng.random((12, 3)) < 0.4).astype(np.float32)
    findings[rng.random((12, 3)) < 0.3] = np.nan
    findings[:2] = [[1, 0, 1], [0, 1, 0]]  # every finding present and absent
    weights = finding_weights(findings)
    logits = torch.tensor(rng.normal(size=(12, 3)), dtype=torch.float32, requires_grad=True)
    loss = masked_bce(logits, torch.from_numpy(findings), weights)
    known = ~np.isnan(findings)
    x, y = logits.detach().double().numpy()[known], findings[known]
    w = weights.numpy()[y.astype(int), np.nonzero(known)[1]]
    bce = np.logaddexp(0, x) - y * x  # -[y log s(x) + (1 - y) log(1 - s(x))]
    assert loss.item() == pytest.approx((w * bce).sum() / w.sum(), rel=1e-6)
    loss.backward()
    assert (logits.grad[torch.from_numpy(~known)] == 0).all() and (logits.grad[torch.from_numpy(known)] != 0).all()
    moved = logits.detach().clone()
    moved[torch.from_numpy(~known)] += 5.0
    assert masked_bce(moved, torch.from_numpy(findings), weights).item() == loss.item()
