"""Embedding analysis: how well the scanner can be read from frozen features, and 2-D maps."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def equal_per_domain(domains: np.ndarray, per_domain: int, seed: int) -> np.ndarray:
    """Sorted positions: the same number of images from every domain (at most ``per_domain``)."""
    names, counts = np.unique(domains, return_counts=True)
    take = min(per_domain, int(counts.min()))
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(domains == d), size=take, replace=False) for d in names]
    return np.sort(np.concatenate(chosen))


def domain_predictability(
    features: np.ndarray, domains: np.ndarray, pca_dim: int = 16, folds: int = 5, seed: int = 0
) -> tuple[float, float]:
    """Mean and spread over ``folds`` of the balanced accuracy of a logistic regression on PCA features.

    PCA runs on the raw features, so it keeps their directions of largest variance.

    Chance is ``1 / number of domains``; a domain-invariant encoder scores near it.
    """
    n_components = min(pca_dim, features.shape[1], len(features) - len(features) // folds - 1)
    model = make_pipeline(
        PCA(n_components=n_components, random_state=seed), StandardScaler(), LogisticRegression(max_iter=2000)
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(model, features, domains, cv=cv, scoring="balanced_accuracy")
    return float(scores.mean()), float(scores.std())


def tsne_map(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """``[N, 2]`` t-SNE coordinates of standardised features (perplexity capped for small N)."""
    perplexity = min(perplexity, max(2.0, (len(features) - 1) / 3))
    scaled = StandardScaler().fit_transform(features)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(scaled)
