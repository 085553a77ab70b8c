"""Embedding analysis: how well the scanner can be read from frozen features, how much they cluster by it, 2-D maps.

Linear predictability says whether the scanner can be read at all (any encoder keeps a burned-in
frame readable, so it saturates); the neighbourhood measures say whether the embedding is
organised by scanner, which is what a t-SNE map shows: on a domain-balanced sample, k-nearest-
neighbour scanner purity relative to chance and the silhouette by scanner, both near 0 for an
embedding independent of the scanner and near 1 for one made of scanner clusters. Where the
true counterfactuals are known (the synthetic benchmark), counterfactual invariance says how far
the features move when only the scanner changes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestNeighbors
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


def knn_domain_purity(features: np.ndarray, domains: np.ndarray, k: int = 10) -> float:
    """Share of each point's ``k`` nearest neighbours from its own domain, relative to chance: ``(p - c) / (1 - c)``.

    Neighbours by Euclidean distance on standardised features, the point itself excluded; chance
    ``c`` is the share of the other points in the same domain (``1 / n_domains`` on a balanced
    sample), so 0 means no clustering by domain and 1 that every neighbour shares the domain.
    """
    domains = np.asarray(domains)
    k = min(k, len(features) - 1)
    scaled = StandardScaler().fit_transform(features)
    neighbours = NearestNeighbors(n_neighbors=k).fit(scaled).kneighbors(return_distance=False)
    same = domains[neighbours] == domains[:, None]
    _, inverse, counts = np.unique(domains, return_inverse=True, return_counts=True)
    chance = float(np.mean((counts[inverse] - 1) / (len(domains) - 1)))
    return float((same.mean() - chance) / (1 - chance))


def domain_silhouette(features: np.ndarray, domains: np.ndarray) -> float:
    """Mean silhouette of the domains as clusters of standardised features (Euclidean): 1 separate, 0 mixed."""
    return float(silhouette_score(StandardScaler().fit_transform(features), domains))


def counterfactual_invariance(
    factual: np.ndarray, patients: np.ndarray, counterfactual: np.ndarray, source: np.ndarray
) -> float:
    """Mean distance between an image's features and its true counterfactual's (``counterfactual[k]`` is image
    ``source[k]`` of ``factual`` under another scanner) over the median distance between images of different
    ``patients``: 0 when changing the scanner leaves the features where they were, about 1 when it moves them
    as far as another patient is (Euclidean, raw features)."""
    moved = np.linalg.norm(counterfactual - factual[source], axis=1).mean()
    codes = np.unique(np.asarray(patients), return_inverse=True)[1].astype(np.float64)
    between = pdist(factual)[pdist(codes[:, None], "cityblock") > 0]
    return float(moved / np.median(between))


def tsne_map(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """``[N, 2]`` t-SNE coordinates of standardised features (perplexity capped for small N)."""
    perplexity = min(perplexity, max(2.0, (len(features) - 1) / 3))
    scaled = StandardScaler().fit_transform(features)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(scaled)
