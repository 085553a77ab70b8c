"""Linear probe: logistic regression with class weights on standardised frozen features."""

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
