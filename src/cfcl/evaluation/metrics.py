"""Classification metrics, their bootstrap intervals and seed-level gains, as pure functions.

AUROC is computed from ranks (Mann-Whitney U); it equals scikit-learn's ``roc_auc_score``
(binary) and its macro one-vs-rest average (several classes). The targets ``y`` are labels ``[N]``
or, for a multi-label store, its findings ``[N, F]`` (1 present, 0 absent, NaN missing), scored by
``prob [N, F]``: then AUROC is the mean over findings of each finding's AUROC on the images where
it is known. Bootstrap resamples are drawn within each class (with findings: within each pattern
of present, absent and missing findings), so every resample holds as many images of every class
(of every finding) as the test set and the metric is always defined; a resample's metrics are
computed from how often it draws each image (its multiplicities) over the images sorted once, so a
bootstrap costs O(resamples x images) and no sort per resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata, t

from cfcl.errors import CfclError


class MetricError(CfclError):
    """A metric is undefined on the given test set (e.g. AUROC with a single class)."""


def _check_classes(y: np.ndarray, n_classes: int, name: str) -> None:
    if y.ndim == 2:
        for f, column in enumerate(y.T):
            if not auroc_defined(column[~np.isnan(column)]):
                raise MetricError(f"test set '{name}': finding {f} is not both present and absent: AUROC is undefined")
        return
    present = np.unique(y)
    if len(present) < 2:
        raise MetricError(f"test set '{name}' holds a single class ({present.tolist()}): AUROC is undefined")
    if present.min() < 0 or present.max() >= n_classes:
        raise MetricError(f"test set '{name}': labels {present.tolist()} outside 0..{n_classes - 1}")


def binary_auroc(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for boolean ``positive`` along the last axis (ties count one half)."""
    ranks = rankdata(score, axis=-1)
    n_pos = positive.sum(axis=-1)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=-1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_defined(y: np.ndarray) -> bool:
    """Whether labels ``[N]`` hold two classes or more, or findings ``[N, F]`` each finding present and absent."""
    y = np.asarray(y)
    if y.ndim == 2:
        return bool(((y == 1).any(axis=0) & (y == 0).any(axis=0)).all())
    return len(np.unique(y)) > 1


def finding_aurocs(findings: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """``[F]`` AUROC of each finding (a column of ``findings``: 1 / 0 / NaN missing) by its column of ``prob`` on
    the images where it is known; NaN for a finding not both present and absent there."""
    known = ~np.isnan(findings)
    return np.array(
        [
            binary_auroc(column[k] == 1, score[k]) if auroc_defined(column[k]) else np.nan
            for column, score, k in zip(findings.T, np.asarray(prob, dtype=np.float64).T, known.T)
        ]
    )


def auroc(y: np.ndarray, prob: np.ndarray, name: str = "test") -> float:
    """ROC-AUC; with more than two classes, the macro average of one-vs-rest AUROCs; with findings ``y [N, F]``,
    the mean of :func:`finding_aurocs`.

    ``prob`` is ``[N, n_classes]`` (binary uses column 1) or ``[N, F]``.
    """
    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    _check_classes(y, prob.shape[1], name)
    if y.ndim == 2:
        return float(finding_aurocs(y, prob).mean())
    if prob.shape[1] == 2:
        return float(binary_auroc(y == 1, prob[:, 1]))
    return float(np.mean([binary_auroc(y == c, prob[:, c]) for c in np.unique(y)]))


def multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """``[B, n]`` counts: how often resample ``b`` (a row of indices into ``n`` images) draws each image."""
    n_boot = idx.shape[0]
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_binary_auroc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for boolean ``positive`` ``[N]`` with per-image weights ``[B, N]``, one per row.

    The weighted Mann-Whitney statistic: sum over (positive i, negative j) of ``w_i w_j`` times 1 when
    ``score_i > score_j`` and 1/2 on a tie, over the product of the weighted class sizes. Integer
    weights (a resample's multiplicities) give the AUROC of that resample exactly.
    """
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    w, pos = weights[:, order], positive[order]
    pos_tied = np.add.reduceat(w * pos, starts, axis=1)
    neg_tied = np.add.reduceat(w * ~pos, starts, axis=1)
    neg_below = np.cumsum(neg_tied, axis=1) - neg_tied
    return (pos_tied * (neg_below + 0.5 * neg_tied)).sum(axis=1) / (pos_tied.sum(axis=1) * neg_tied.sum(axis=1))


def weighted_finding_aurocs(findings: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[F, B]``: :func:`finding_aurocs` under each row of per-image ``weights [B, N]``."""
    known = ~np.isnan(findings)
    return np.stack(
        [
            weighted_binary_auroc(column[k] == 1, score[k], weights[:, k])
            for column, score, k in zip(findings.T, prob.T, known.T)
        ]
    )


def weighted_auroc(y: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``(y, prob [N, C])`` under each row of per-image ``weights [B, N]``; with a resample's
    :func:`multiplicities`, as :func:`auroc` on that resample."""
    if y.ndim == 2:
        return weighted_finding_aurocs(y, prob, weights).mean(axis=0)
    if prob.shape[-1] == 2:
        return weighted_binary_auroc(y == 1, prob[:, 1], weights)
    return np.mean([weighted_binary_auroc(y == c, prob[:, c], weights) for c in np.unique(y)], axis=0)


def weighted_balanced_accuracy(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Balanced accuracy of ``(y, pred)`` under each row of per-image ``weights [B, N]``."""
    hit = pred == y
    return np.mean([(weights * (hit & (y == c))).sum(1) / (weights * (y == c)).sum(1) for c in np.unique(y)], axis=0)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (scikit-learn's definition)."""
    y, pred = np.asarray(y), np.asarray(pred)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def val_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The threshold on a binary classifier's ``score`` (of class 1) with the highest balanced accuracy on
    validation labels ``y``, predicting class 1 where ``score >= threshold``; ties go to the highest threshold."""
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="stable")
    ranked, positive = score[order], np.asarray(y)[order] == 1
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]  # each distinct score's last place
    tpr = np.cumsum(positive)[last] / positive.sum()
    fpr = np.cumsum(~positive)[last] / (~positive).sum()
    return float(ranked[last[np.argmax((tpr + 1 - fpr) / 2)]])


def stratified_resamples(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, N]`` indices, each row resampling every class with replacement at its own size; with findings
    ``y [N, F]``, every pattern of present, absent and missing findings, so that each finding keeps its numbers of
    positive, negative and missing images."""
    y = np.asarray(y)
    if y.ndim == 2:
        y = np.unique(np.where(np.isnan(y), 2, y), axis=0, return_inverse=True)[1].reshape(-1)
    rows = np.empty((n_boot, len(y)), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rows[:, start : start + len(members)] = rng.choice(members, size=(n_boot, len(members)))
        start += len(members)
    return rows


def bootstrap_ci(
    y: np.ndarray, prob: np.ndarray, n_boot: int = 200, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of AUROC and balanced accuracy (class-stratified resamples)."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    weights = multiplicities(stratified_resamples(y, n_boot, np.random.default_rng(seed)), len(y))
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in (
        ("auroc", weighted_auroc(y, prob, weights)),
        ("balanced_accuracy", weighted_balanced_accuracy(y, prob.argmax(-1), weights)),
    ):
        low, high = np.percentile(values, [tail, 100 - tail])
        out[name] = (float(low), float(high))
    return out


def finding_bootstrap_ci(
    findings: np.ndarray, prob: np.ndarray, n_boot: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, tuple[float, float]]:
    """Percentile bootstrap intervals ``[F, 2]`` of each finding's AUROC and ``(low, high)`` of their mean, from
    the same resamples of the images (within patterns of findings: :func:`stratified_resamples`)."""
    prob = np.asarray(prob, dtype=np.float64)
    weights = multiplicities(stratified_resamples(findings, n_boot, np.random.default_rng(seed)), len(findings))
    values = weighted_finding_aurocs(findings, prob, weights)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values.mean(axis=0), [tail, 100 - tail])
    return np.percentile(values, [tail, 100 - tail], axis=1).T, (float(low), float(high))


def paired_gain_ci(
    y: np.ndarray,
    prob: list[np.ndarray],
    reference: list[np.ndarray],
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Gain in AUROC (with findings ``y [N, F]``: mean AUROC over findings) of one method over a reference on the
    same test set, averaged over seeds.

    ``prob[s]`` and ``reference[s]`` are the scores of seed ``s``; each bootstrap resample of
    the test images is shared by all seeds and both methods (paired), so the interval reflects
    test-set sampling of the seed-averaged gain.
    """
    y = np.asarray(y)
    weights = multiplicities(stratified_resamples(y, n_boot, np.random.default_rng(seed)), len(y))
    gain = np.mean([auroc(y, p) - auroc(y, r) for p, r in zip(prob, reference)])
    boot = np.mean(
        [
            weighted_auroc(y, np.asarray(p, dtype=np.float64), weights)
            - weighted_auroc(y, np.asarray(r, dtype=np.float64), weights)
            for p, r in zip(prob, reference)
        ],
        axis=0,
    )
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(gain), float(low), float(high)


@dataclass(frozen=True)
class SeedInterval:
    """A mean over seeds with its t-interval (NaN with fewer than 2 seeds) and how many seeds lie above 0."""

    mean: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_positive: int
    note: str = ""

    @property
    def supported(self) -> bool:
        """A gain (or loss) is supported only when its interval excludes 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    @property
    def signs(self) -> str:
        return f"{self.n_positive}/{self.n_seeds} > 0"


def seed_interval(values: pd.Series, level: float = 0.95) -> SeedInterval:
    """Mean of ``values`` (indexed by seed) and its t-interval ``mean +- t_{n-1} * sd / sqrt(n)`` over seeds.

    Repeats of a seed (several label draws or test resamples) are averaged first, so the seed is
    the unit of replication and the interval reflects pretraining and label-draw variation.
    """
    per_seed = values.groupby(level=0).mean().dropna()
    n = len(per_seed)
    if n == 0:
        return SeedInterval(float("nan"), float("nan"), float("nan"), 0, 0, "no seed")
    mean, positive = float(per_seed.mean()), int((per_seed > 0).sum())
    if n < 2:
        return SeedInterval(mean, float("nan"), float("nan"), n, positive, "1 seed: no interval")
    half = float(t.ppf((1 + level) / 2, n - 1) * per_seed.std(ddof=1) / np.sqrt(n))
    return SeedInterval(mean, mean - half, mean + half, n, positive)


def paired_seed_gain(method: pd.Series, reference: pd.Series, level: float = 0.95) -> SeedInterval:
    """``method - reference`` paired by seed (same pretraining seed and label draw), each Series indexed by
    seed with its repeats averaged first; seeds only one of them has are left out."""
    return seed_interval(method.groupby(level=0).mean() - reference.groupby(level=0).mean(), level)


@dataclass(frozen=True)
class VarianceComponents:
    """Where the spread of a paired gain comes from, as standard deviations of one seed's gain.

    ``sd_draw``: between label draws of the same encoder pair; ``sd_seed``: between pretraining
    seeds beyond what their draws explain (a one-way random-effects split, floored at 0);
    ``half_width``: the t-interval half-width over the ``n_seeds`` seed means that were measured.
    """

    n_seeds: int
    n_draws: int
    sd_seed: float
    sd_draw: float
    half_width: float

    def projected_half_width(self, seeds: int, draws: int, level: float = 0.95) -> float:
        """The expected t-interval half-width with ``seeds`` seeds of ``draws`` label draws each."""
        if seeds < 2:
            return float("nan")
        # With one draw per seed, sd_seed already holds the draw's spread, and only one draw can be projected.
        draw_variance = self.sd_draw**2 / draws if self.n_draws > 1 else (0.0 if draws == 1 else float("nan"))
        spread = np.sqrt((self.sd_seed**2 + draw_variance) / seeds)
        return float(t.ppf((1 + level) / 2, seeds - 1) * spread)

    def seeds_needed(self, half_width: float, draws: int, most: int, level: float = 0.95) -> float:
        """The fewest seeds (of ``draws`` label draws each) whose projected half-width is at most
        ``half_width``; NaN when the components are unknown or more than ``most`` seeds would be needed."""
        return float(
            next((n for n in range(2, most + 1) if self.projected_half_width(n, draws, level) <= half_width), np.nan)
        )


def variance_components(gains: pd.DataFrame, level: float = 0.95) -> VarianceComponents:
    """Split the variance of ``gains`` (columns ``seed``, ``draw``, ``value``: one paired gain per
    seed and label draw, the same number of draws per seed) into seed and draw components."""
    table = gains.pivot_table(index="seed", columns="draw", values="value", aggfunc="mean").dropna()
    n_seeds, n_draws = table.shape
    within = float(table.var(axis=1, ddof=1).mean()) if n_draws > 1 else float("nan")
    draw_share = within / n_draws if n_draws > 1 else 0.0  # what the draws add to the variance of a seed's mean
    means = table.mean(axis=1)
    interval = seed_interval(means, level)
    between = float(means.var(ddof=1)) if n_seeds > 1 else float("nan")
    sd_seed = float(np.sqrt(max(0.0, between - draw_share))) if n_seeds > 1 else float("nan")
    return VarianceComponents(n_seeds, n_draws, sd_seed, float(np.sqrt(within)), interval.ci_high - interval.mean)
