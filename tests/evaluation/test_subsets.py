"""Label-fraction subsets: stratified by domain and label, seeded; too-small fractions; patient holdout."""

import numpy as np
import pandas as pd
import pytest

from cfcl.evaluation.subsets import SubsetTooSmall, labelled_subset, patient_holdout, require_findings


@pytest.fixture
def meta():
    rng = np.random.default_rng(0)
    n = 1000
    domain = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    label = (rng.random(n) < np.where(domain == 2, 0.5, 0.2)).astype(int)
    return pd.DataFrame({"domain": domain, "label": label, "patient_id": [f"p{i // 3}" for i in range(n)]})


def test_subset_keeps_each_domain_label_group_in_proportion(meta):
    rows = np.arange(len(meta))
    subset = labelled_subset(meta, rows, 0.1, seed=0)
    full = meta.groupby(["domain", "label"]).size()
    part = meta.iloc[subset].groupby(["domain", "label"]).size()
    assert (part - (full * 0.1).round()).abs().max() == 0
    assert len(np.unique(subset)) == len(subset)


def test_subset_is_seeded_and_limited_to_given_rows(meta):
    rows = np.flatnonzero(meta.index % 2 == 0)
    a = labelled_subset(meta, rows, 0.2, seed=3)
    assert np.array_equal(a, labelled_subset(meta, rows, 0.2, seed=3))
    assert not np.array_equal(a, labelled_subset(meta, rows, 0.2, seed=4))
    assert set(a) <= set(rows)
    assert np.array_equal(labelled_subset(meta, rows, 1.0, seed=0), rows)


def test_fraction_too_small_to_hold_every_class_names_the_missing_label():
    meta = pd.DataFrame({"domain": [0] * 40, "label": [0] * 38 + [1] * 2})
    with pytest.raises(SubsetTooSmall, match=r"label fraction 0.1 of split 'train' .*label\(s\) \[1\]"):
        labelled_subset(meta, np.arange(40), 0.1, seed=0)


def test_patient_holdout_keeps_patients_on_one_side(meta):
    rows = np.arange(len(meta))
    train, val = patient_holdout(meta, rows, 0.2, seed=0)
    patients = meta["patient_id"].to_numpy()
    assert not set(patients[train]) & set(patients[val])
    assert len(train) + len(val) == len(rows)
    assert 0.1 < len(val) / len(rows) < 0.3
    assert set(meta["label"].to_numpy()[val]) == {0, 1}


def test_a_subset_must_hold_every_finding_present_and_absent_among_its_known_images():
    findings = np.array([[1, 0], [0, np.nan], [0, 1], [1, np.nan], [0, 0]], dtype=float)
    require_findings(findings, ["Edema", "Nodule"], np.array([0, 1, 2, 4]), "subset")
    with pytest.raises(SubsetTooSmall, match=r"subset \(3 images\) holds finding\(s\) \['Nodule'\] not both present"):
        require_findings(findings, ["Edema", "Nodule"], np.array([0, 1, 3]), "subset")
