"""Pairing: which image each view comes from, per method."""

import numpy as np
import pytest

from cfcl.contrastive.pairing import plan_views

N_IMAGES, N_DOMAINS = 6, 4
DOMAINS = np.array([0, 1, 2, 0, 1, 2])
# row of (image i, domain d) in the counterfactual store: 100 * i + d; image 5 has no counterfactuals
TABLE = np.array([[100 * i + d for d in range(N_DOMAINS)] for i in range(N_IMAGES)])
TABLE[5] = -1
TARGETS = [0, 1, 2]  # domain 3 is out-of-distribution


def _plan(method, rng=None, **kw):
    sources = np.arange(N_IMAGES)
    return plan_views(method, sources, DOMAINS[sources], TABLE, TARGETS, rng or np.random.default_rng(0), **kw)


def test_simclr_uses_the_image_twice():
    plan = plan_views("simclr", np.array([4, 2]), np.array([1, 2]), None, TARGETS, np.random.default_rng(0))
    assert plan.rows.tolist() == [4, 2, 4, 2]
    assert not plan.from_cf.any()
    assert plan.groups.tolist() == [0, 1, 0, 1]


def test_cf_simclr_second_view_is_a_counterfactual_to_another_in_distribution_domain():
    for seed in range(20):
        plan = _plan("cf-simclr", np.random.default_rng(seed), p_cf=1.0)
        assert plan.rows[:N_IMAGES].tolist() == list(range(N_IMAGES)) and not plan.from_cf[:N_IMAGES].any()
        second, used = plan.rows[N_IMAGES:], plan.from_cf[N_IMAGES:]
        assert used[:5].all() and not used[5] and second[5] == 5  # no counterfactual: the image itself
        source, target = second[:5] // 100, second[:5] % 100
        assert (source == np.arange(5)).all()
        assert (target != DOMAINS[:5]).all() and np.isin(target, TARGETS).all()
        assert plan.groups.tolist() == list(range(N_IMAGES)) * 2


def test_cf_simclr_targets_are_uniform_over_the_other_domains():
    targets = [_plan("cf-simclr", np.random.default_rng(s)).rows[N_IMAGES] % 100 for s in range(600)]
    counts = np.bincount(targets, minlength=N_DOMAINS)  # image 0 (domain 0) -> domains 1 or 2
    assert counts[0] == 0 and counts[3] == 0
    assert abs(counts[1] - counts[2]) < 100


def test_p_cf_is_the_probability_of_a_counterfactual_view():
    rng = np.random.default_rng(1)
    used = np.mean([_plan("oracle", rng, p_cf=0.3).from_cf[N_IMAGES : 5 + N_IMAGES].mean() for _ in range(400)])
    assert used == pytest.approx(0.3, abs=0.05)
    assert not _plan("cf-simclr", p_cf=0.0).from_cf.any()


def test_multi_positive_draws_distinct_counterfactuals_sharing_the_group():
    plan = _plan("cf-simclr-multi", n_cf_views=2)
    assert len(plan.rows) == 3 * N_IMAGES
    views = plan.rows.reshape(3, N_IMAGES)
    for i in range(5):
        assert sorted(views[1:, i] % 100) == sorted(set(TARGETS) - {DOMAINS[i]})
    assert (views[:, 5] == 5).all()
    assert (plan.groups.reshape(3, N_IMAGES) == np.arange(N_IMAGES)).all()
    with pytest.raises(ValueError, match="only 3 target cells"):
        _plan("cf-simclr", n_cf_views=4)


@pytest.mark.parametrize("n_cf_views", [2, 3])
def test_simclr_multi_takes_as_many_views_as_cf_simclr_multi_all_of_the_image(n_cf_views):
    sources = np.arange(N_IMAGES)
    plan = plan_views("simclr-multi", sources, DOMAINS, None, TARGETS, np.random.default_rng(0), n_cf_views=n_cf_views)
    multi = _plan("cf-simclr-multi", n_cf_views=n_cf_views)
    assert len(plan.rows) == len(multi.rows) == (1 + n_cf_views) * N_IMAGES
    assert plan.rows.tolist() == list(range(N_IMAGES)) * (1 + n_cf_views) and not plan.from_cf.any()
    assert np.array_equal(plan.groups, multi.groups)
    no_cf = _plan("cf-simclr-multi", n_cf_views=n_cf_views, p_cf=0.0)  # cf-simclr-multi never drawing one
    for field in ("rows", "from_cf", "groups"):
        assert np.array_equal(getattr(plan, field), getattr(no_cf, field))


def test_simclr_plus_replaces_the_image_then_takes_two_views_of_it():
    rng = np.random.default_rng(2)
    replaced = []
    for _ in range(300):
        plan = _plan("simclr+", rng, p_replace=0.5)
        first, second = plan.rows[:N_IMAGES], plan.rows[N_IMAGES:]
        assert (first == second).all() and (plan.from_cf[:N_IMAGES] == plan.from_cf[N_IMAGES:]).all()
        cf = plan.from_cf[:N_IMAGES]
        assert (first[cf] // 100 == np.arange(N_IMAGES)[cf]).all()
        assert (first[cf] % 100 != DOMAINS[cf]).all() and np.isin(first[cf] % 100, TARGETS).all()
        assert (first[~cf] == np.arange(N_IMAGES)[~cf]).all()
        replaced.append(cf[:5].mean())
    assert np.mean(replaced) == pytest.approx(0.5, abs=0.05)


def test_dino_takes_two_global_views_and_the_local_crops_all_from_the_image():
    plan = _plan("dino", n_local=4)
    assert plan.rows.tolist() == list(range(N_IMAGES)) * 6 and not plan.from_cf.any()
    assert plan.groups.tolist() == list(range(N_IMAGES)) * 6


def test_cf_dino_local_crops_half_real_half_one_counterfactual_and_the_second_global_view_with_p_cf():
    rng = np.random.default_rng(3)
    global_cf = []
    for _ in range(300):
        plan = _plan("cf-dino", rng, p_cf=0.5, n_local=4)
        views, used = plan.rows.reshape(6, N_IMAGES), plan.from_cf.reshape(6, N_IMAGES)
        assert (views[0] == np.arange(N_IMAGES)).all() and not used[0].any()  # global view 1: always real
        assert (views[2:4] == np.arange(N_IMAGES)).all() and not used[2:4].any()  # first half of the locals: real
        assert used[4:, :5].all() and (views[4] == views[5]).all()  # second half: the image's one counterfactual
        target = views[4, :5] % 100
        assert (views[4, :5] // 100 == np.arange(5)).all()
        assert (target != DOMAINS[:5]).all() and np.isin(target, TARGETS).all()  # never its own or the OOD domain
        assert (views[:, 5] == 5).all() and not used[:, 5].any()  # no counterfactual: the image itself
        cf = used[1, :5]
        assert (views[1, :5][cf] == views[4, :5][cf]).all()  # a replaced global view is that same counterfactual
        global_cf.append(cf.mean())
    assert np.mean(global_cf) == pytest.approx(0.5, abs=0.05)
    assert not _plan("oracle-dino", p_cf=0.0, n_local=0).from_cf.any()


def test_dino_plus_replaces_the_image_then_takes_every_view_of_it():
    plan = _plan("dino+", np.random.default_rng(4), p_replace=1.0, n_local=2)
    views, used = plan.rows.reshape(4, N_IMAGES), plan.from_cf.reshape(4, N_IMAGES)
    assert (views == views[0]).all() and (used == used[0]).all()
    assert used[0, :5].all() and not used[0, 5] and (views[0, :5] % 100 != DOMAINS[:5]).all()


@pytest.mark.parametrize(
    "control, like", [("oracle-renoised", "oracle"), ("oracle-recon", "oracle"), ("cf-simclr-base", "cf-simclr")]
)
def test_a_control_takes_the_views_of_the_method_it_controls(control, like):
    for seed in range(5):
        ours, theirs = (
            _plan(control, np.random.default_rng(seed), p_cf=0.7),
            _plan(like, np.random.default_rng(seed), p_cf=0.7),
        )
        assert ours.from_cf.any()
        for field in ("rows", "from_cf", "groups"):
            assert np.array_equal(getattr(ours, field), getattr(theirs, field))
