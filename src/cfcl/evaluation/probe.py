"""Linear probe: logistic regression with class weights on standardised frozen features; for a multi-label
store, one such probe per finding (:func:`fit_finding_probes`)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_probe(
    features: np.ndarray, labels: np.ndarray, C: float = 1.0, max_iter: int = 1000, seed: int = 0
) -> Pipeline:
    """Classes are weighted inversely to their frequency, so a rare class is not ignored.

    Newton-Cholesky converges in a few iterations on the few hundred feature dimensions of an
    encoder, where L-BFGS needs hundreds on correlated features.
    """
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=C, max_iter=max_iter, class_weight="balanced", solver="newton-cholesky", random_state=seed
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, labels)
    return model


def class_probabilities(model: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """``[N, n_classes]`` probabilities; classes the probe never saw get probability 0."""
    prob = np.zeros((len(features), n_classes))
    prob[:, model.classes_] = model.predict_proba(features)
    return prob


def fit_finding_probes(
    features: np.ndarray, findings: np.ndarray, C: float = 1.0, max_iter: int = 1000, seed: int = 0
) -> list[Pipeline]:
    """One :func:`fit_probe` per finding (a column of ``findings``: 1 / 0 / NaN missing), each on the images where
    that finding is known.

    Together they are one linear head over all findings (each standardisation folds into its finding's weights)
    trained with a per-finding logistic loss from which the missing labels are masked out: that loss is a sum over
    findings, each term depending on its own weights only, so it is minimised finding by finding.
    """
    known = ~np.isnan(findings)
    return [
        fit_probe(features[k], column[k].astype(np.int64), C, max_iter, seed) for column, k in zip(findings.T, known.T)
    ]


def finding_probabilities(probes: list[Pipeline], features: np.ndarray) -> np.ndarray:
    """``[N, F]``: each finding's probability of being present."""
    return np.stack([class_probabilities(probe, features, 2)[:, 1] for probe in probes], axis=1)
