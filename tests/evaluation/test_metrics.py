"""Metrics: AUROC / balanced accuracy against hand-computed values and scikit-learn; bootstrap and seed intervals."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from cfcl.evaluation.metrics import (
    MetricError,
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    finding_aurocs,
    finding_bootstrap_ci,
    multiplicities,
    paired_gain_ci,
    paired_seed_gain,
    stratified_resamples,
    weighted_auroc,
    weighted_balanced_accuracy,
)


def binary_prob(score):
    score = np.asarray(score, dtype=float)
    return np.stack([1 - score, score], axis=1)


def test_auroc_hand_computed_with_a_tie():
    # positives score 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4), (0.8>0.1), (0.4=0.4 -> 1/2), (0.4>0.1)
    y = np.array([1, 1, 0, 0])
    assert auroc(y, binary_prob([0.8, 0.4, 0.4, 0.1])) == pytest.approx(3.5 / 4)


def test_auroc_matches_sklearn_binary_and_macro_one_vs_rest():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = rng.random(200) + 0.5 * y
    assert auroc(y, binary_prob(score)) == pytest.approx(roc_auc_score(y, score))
    y4 = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y4]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert auroc(y4, prob) == pytest.approx(roc_auc_score(y4, prob, multi_class="ovr", average="macro"))


def test_auroc_of_a_single_class_test_set_is_a_clear_error():
    with pytest.raises(MetricError, match="'ood' holds a single class"):
        auroc(np.ones(5, dtype=int), binary_prob(np.linspace(0, 1, 5)), name="ood")


def test_balanced_accuracy_hand_computed_and_sklearn():
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 0])
    assert balanced_accuracy(y, pred) == pytest.approx((3 / 4 + 1 / 2) / 2)
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))


def test_stratified_resamples_keep_each_class_count_and_stay_in_class():
    y = np.array([0] * 7 + [1] * 3 + [2] * 5)
    idx = stratified_resamples(y, 50, np.random.default_rng(0))
    assert idx.shape == (50, 15)
    for row in idx:
        assert np.bincount(y[row], minlength=3).tolist() == [7, 3, 5]


def test_metrics_weighted_by_multiplicities_equal_sklearn_on_each_explicit_resample():
    """The multiplicity shortcut must give each resample's own AUROC (ties included) and balanced accuracy."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    score = np.round(rng.random(120) + 0.4 * y, 1)  # coarse scores: many ties, within and across classes
    idx = stratified_resamples(y, 25, rng)
    expected = [roc_auc_score(y[row], score[row]) for row in idx]
    np.testing.assert_allclose(weighted_auroc(y, binary_prob(score), multiplicities(idx, len(y))), expected, atol=1e-12)
    y3 = rng.integers(0, 3, 90)
    prob = rng.dirichlet([1, 1, 1], 90)
    idx = stratified_resamples(y3, 25, rng)
    expected = [roc_auc_score(y3[row], prob[row], multi_class="ovr", average="macro") for row in idx]
    np.testing.assert_allclose(weighted_auroc(y3, prob, multiplicities(idx, len(y3))), expected, atol=1e-12)
    expected = [balanced_accuracy_score(y3[row], prob[row].argmax(1)) for row in idx]
    np.testing.assert_allclose(
        weighted_balanced_accuracy(y3, prob.argmax(1), multiplicities(idx, len(y3))), expected, atol=1e-12
    )


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)

    def sample(n):
        y = np.repeat([0, 1], n)
        return y, binary_prob(rng.random(2 * n) + 0.6 * y)

    y, prob = sample(60)
    ci = bootstrap_ci(y, prob, n_boot=300, seed=0)
    low, high = ci["auroc"]
    assert low < auroc(y, prob) < high
    assert ci["balanced_accuracy"][0] < balanced_accuracy(y, prob.argmax(1)) < ci["balanced_accuracy"][1]
    y_big, prob_big = sample(2000)
    low_big, high_big = bootstrap_ci(y_big, prob_big, n_boot=300, seed=0)["auroc"]
    assert high_big - low_big < (high - low) / 3
    assert bootstrap_ci(y, prob, n_boot=300, seed=0) == ci


def test_paired_gain_is_zero_for_identical_scores_and_positive_for_a_better_method():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    reference = [binary_prob(rng.random(200) + 0.3 * y) for _ in range(2)]
    assert paired_gain_ci(y, reference, reference, n_boot=100) == (0.0, 0.0, 0.0)
    better = [binary_prob(rng.random(200) + 1.5 * y) for _ in range(2)]
    gain, low, high = paired_gain_ci(y, better, reference, n_boot=200)
    expected = np.mean([auroc(y, b) - auroc(y, r) for b, r in zip(better, reference)])
    assert gain == pytest.approx(expected) and 0 < low < gain < high


def findings_and_scores(rng, n=300):
    """Three findings (1 / 0 / NaN missing) and scores that rank each one, better for the first; the images of a
    missing finding score high, as uncertain ones often look like positives."""
    findings = (rng.random((n, 3)) < [0.3, 0.5, 0.2]).astype(float)
    findings[rng.random((n, 3)) < [0.0, 0.2, 0.3]] = np.nan
    prob = rng.random((n, 3)) + np.nan_to_num(findings) * [0.6, 0.4, 0.3] + np.isnan(findings)
    return findings, prob


def test_each_findings_auroc_is_sklearns_on_the_images_where_it_is_known_and_auroc_is_their_mean():
    findings, prob = findings_and_scores(np.random.default_rng(0))
    expected = [roc_auc_score(findings[known, f], prob[known, f]) for f, known in enumerate((~np.isnan(findings)).T)]
    np.testing.assert_allclose(finding_aurocs(findings, prob), expected, atol=1e-12)
    assert auroc(findings, prob) == pytest.approx(np.mean(expected))
    # read as absent, the missing images would count: a different AUROC
    assert abs(roc_auc_score(np.nan_to_num(findings[:, 2]), prob[:, 2]) - expected[2]) > 0.1
    findings[:, 1] = np.where(np.isnan(findings[:, 1]), np.nan, 1.0)
    with pytest.raises(MetricError, match="finding 1 is not both present and absent"):
        auroc(findings, prob)


def test_resamples_of_findings_keep_every_findings_present_absent_and_missing_counts():
    findings, _ = findings_and_scores(np.random.default_rng(1))
    counts = [[(c == 1).sum(), (c == 0).sum(), np.isnan(c).sum()] for c in findings.T]
    for row in stratified_resamples(findings, 30, np.random.default_rng(0)):
        drawn = findings[row]
        assert [[(c == 1).sum(), (c == 0).sum(), np.isnan(c).sum()] for c in drawn.T] == counts


def test_finding_bootstrap_weights_give_each_resamples_own_aurocs_and_bracket_the_estimates():
    rng = np.random.default_rng(2)
    findings, prob = findings_and_scores(rng)
    idx = stratified_resamples(findings, 20, rng)
    expected = [auroc(findings[row], prob[row]) for row in idx]
    np.testing.assert_allclose(weighted_auroc(findings, prob, multiplicities(idx, len(findings))), expected)
    bounds, (low, high) = finding_bootstrap_ci(findings, prob, n_boot=300, seed=0)
    point = finding_aurocs(findings, prob)
    assert bounds.shape == (3, 2) and (bounds[:, 0] < point).all() and (point < bounds[:, 1]).all()
    assert low < point.mean() < high < bounds[:, 1].max()


def test_paired_gain_of_findings_is_the_gain_in_mean_auroc():
    rng = np.random.default_rng(3)
    findings, reference = findings_and_scores(rng)
    better = reference + np.nan_to_num(findings) * 2.0
    assert paired_gain_ci(findings, [reference], [reference], n_boot=50) == (0.0, 0.0, 0.0)
    gain, low, high = paired_gain_ci(findings, [better], [reference], n_boot=200)
    assert gain == pytest.approx(auroc(findings, better) - auroc(findings, reference)) and 0 < low < gain < high


def by_seed(values: dict) -> pd.Series:
    """A Series indexed by seed, a list of values for a seed's repeats."""
    pairs = [(seed, v) for seed, vs in values.items() for v in (vs if isinstance(vs, list) else [vs])]
    return pd.Series([v for _, v in pairs], index=[s for s, _ in pairs], dtype=float)


def test_seed_gain_is_paired_by_seed_with_repeats_averaged_and_a_t_interval():
    # seed 0 has two label draws (mean 0.71); seed 3 has no reference and is left out
    method = by_seed({0: [0.70, 0.72], 1: 0.75, 2: 0.68, 3: 0.90})
    reference = by_seed({0: 0.65, 1: 0.70, 2: 0.70})
    gain = paired_seed_gain(method, reference)
    diffs = np.array([0.06, 0.05, -0.02])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert half == pytest.approx(0.10828, abs=1e-5)  # 4.3027 * 0.043589 / sqrt(3)
    assert gain.mean == pytest.approx(0.03) and gain.n_seeds == 3
    assert (gain.ci_low, gain.ci_high) == pytest.approx((0.03 - half, 0.03 + half))
    assert gain.signs == "2/3 > 0" and not gain.supported and gain.note == ""
    # a consistent gain: 0.06 +- 4.3027 * 0.01 / sqrt(3) = [0.0352, 0.0848], interval above 0
    gain = paired_seed_gain(by_seed({0: 0.75, 1: 0.76, 2: 0.77}), by_seed({0: 0.70, 1: 0.70, 2: 0.70}))
    assert (gain.ci_low, gain.ci_high) == pytest.approx((0.03516, 0.08484), abs=1e-5)
    assert gain.supported and gain.signs == "3/3 > 0"
    # a consistent loss is supported too (its interval excludes 0), with no seed above 0
    loss = paired_seed_gain(by_seed({0: 0.65, 1: 0.64, 2: 0.63}), by_seed({0: 0.70, 1: 0.70, 2: 0.70}))
    assert loss.mean == pytest.approx(-0.06) and loss.ci_high < 0 and loss.supported and loss.signs == "0/3 > 0"
    # a 90 % interval is narrower than the 95 % one
    narrow = paired_seed_gain(method, reference, level=0.90)
    assert narrow.ci_high - narrow.ci_low == pytest.approx(2 * stats.t.ppf(0.95, 2) * diffs.std(ddof=1) / np.sqrt(3))


def test_seed_gain_with_fewer_than_two_seeds_has_a_mean_and_says_why_there_is_no_interval():
    gain = paired_seed_gain(by_seed({0: [0.80, 0.84], 1: 0.9}), by_seed({0: 0.75, 2: 0.5}))
    assert gain.mean == pytest.approx(0.07) and gain.n_seeds == 1 and gain.signs == "1/1 > 0"
    assert np.isnan(gain.ci_low) and np.isnan(gain.ci_high) and not gain.supported
    assert gain.note == "1 seed: no interval"
    none = paired_seed_gain(by_seed({0: 0.8}), by_seed({1: 0.7}))
    assert none.n_seeds == 0 and np.isnan(none.mean) and not none.supported and none.note == "no seed"


def test_variance_components_split_seed_and_draw_spread_by_hand():
    from scipy.stats import t as student_t

    from cfcl.evaluation.metrics import variance_components

    gains = pd.DataFrame(
        {"seed": [0, 0, 1, 1, 2, 2], "draw": [0, 1] * 3, "value": [0.10, 0.14, 0.00, 0.02, 0.05, 0.11]}
    )
    parts = variance_components(gains)
    within = np.mean([np.var([0.10, 0.14], ddof=1), np.var([0.00, 0.02], ddof=1), np.var([0.05, 0.11], ddof=1)])
    means = np.array([0.12, 0.01, 0.08])
    between = np.var(means, ddof=1)
    assert (parts.n_seeds, parts.n_draws) == (3, 2)
    assert parts.sd_draw == pytest.approx(np.sqrt(within))
    assert parts.sd_seed == pytest.approx(np.sqrt(between - within / 2))
    assert parts.half_width == pytest.approx(student_t.ppf(0.975, 2) * np.sqrt(between / 3))
    projected = student_t.ppf(0.975, 9) * np.sqrt((between - within / 2 + within / 4) / 10)
    assert parts.projected_half_width(10, 4) == pytest.approx(projected)
    one_draw = variance_components(gains[gains["draw"] == 0])
    assert np.isnan(one_draw.sd_draw) and one_draw.sd_seed == pytest.approx(np.std([0.10, 0.00, 0.05], ddof=1))


def test_seeds_needed_is_the_fewest_seeds_that_reach_the_half_width():
    from scipy.stats import t as student_t

    from cfcl.evaluation.metrics import VarianceComponents

    parts = VarianceComponents(n_seeds=5, n_draws=4, sd_seed=0.03, sd_draw=0.04, half_width=0.05)

    def half(n: int) -> float:
        return student_t.ppf(0.975, n - 1) * np.sqrt((0.03**2 + 0.04**2 / 4) / n)

    needed = parts.seeds_needed(0.02, 4, 1000)
    assert half(int(needed)) <= 0.02 < half(int(needed) - 1)
    assert np.isnan(parts.seeds_needed(0.001, 4, 50))  # more than 50 seeds would be needed
    one_draw = VarianceComponents(n_seeds=5, n_draws=1, sd_seed=0.03, sd_draw=float("nan"), half_width=0.05)
    assert one_draw.projected_half_width(10, 1) == pytest.approx(student_t.ppf(0.975, 9) * 0.03 / np.sqrt(10))
    assert np.isnan(one_draw.projected_half_width(10, 5))  # a draw's own spread is unknown
