"""Linear probes: one per finding of a multi-label store, missing findings masked out of its loss."""

import numpy as np

from cfcl.evaluation.probe import class_probabilities, finding_probabilities, fit_finding_probes, fit_probe


def test_each_finding_probe_learns_from_the_images_where_that_finding_is_known_and_only_those():
    rng = np.random.default_rng(0)
    n = 400
    features = rng.normal(size=(n, 6))
    findings = np.stack([features[:, 0] > 0, features[:, 1] + 0.5 * rng.normal(size=n) > 0], axis=1).astype(float)
    # the second finding is missing where the first feature is high: read as absent, those images would teach the
    # probe that a high first feature means "absent"
    missing = features[:, 0] > 0.8
    findings[missing, 1] = np.nan
    probes = fit_finding_probes(features, findings, seed=0)
    prob = finding_probabilities(probes, features)
    assert prob.shape == (n, 2) and ((prob >= 0) & (prob <= 1)).all()
    known = ~missing
    alone = fit_probe(features[known], findings[known, 1].astype(int), seed=0)
    np.testing.assert_allclose(prob[:, 1], class_probabilities(alone, features, 2)[:, 1], atol=1e-12)
    first = fit_probe(features, findings[:, 0].astype(int), seed=0)
    np.testing.assert_allclose(prob[:, 0], class_probabilities(first, features, 2)[:, 1], atol=1e-12)
    # masked, the first feature says nothing about the second finding; read as absent, it says "absent"
    unmasked = fit_probe(features, np.nan_to_num(findings[:, 1]).astype(int), seed=0)
    assert abs(probes[1][-1].coef_[0, 0]) < 0.2 and unmasked[-1].coef_[0, 0] < -0.5
