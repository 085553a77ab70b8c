"""Pretraining data: store checks, views gathered from the right store rows, step-positioned sampling."""

import numpy as np
import pandas as pd
import pytest
import torch

from cfcl.contrastive.data import ViewBatches, open_pretrain_data
from cfcl.contrastive.methods import default_cf_store
from cfcl.data.store import write_store
from cfcl.errors import ConfigError, StoreError
from cfcl.loaders import StepSampler

DOMAINS = ["a", "b", "c"]  # c is out-of-distribution


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    n = 20
    meta = pd.DataFrame(
        {
            "index": range(n),
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": ["train"] * 16 + ["ood_test"] * 4,
            "domain": [i % 2 for i in range(16)] + [2] * 4,
            "label": [i % 2 for i in range(n)],
        }
    )
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], 8, 1).repeat(8, 2)  # image i is filled with i
    data = write_store(root / "data", images, meta, DOMAINS, ["n", "y"], extra={"ood_domains": [2], "synthetic": True})
    pairs = [(i, d) for i in range(n) for d in range(3)]
    cf_meta = pd.DataFrame(
        {"index": range(len(pairs)), "source_index": [i for i, _ in pairs], "target_domain": [d for _, d in pairs]}
    )
    cf_images = np.stack([np.full((8, 8), 100 + 10 * d + i % 10, np.uint8) for i, d in pairs])
    write_store(
        root / "data" / "true_cf",
        cf_images,
        cf_meta,
        DOMAINS,
        ["n", "y"],
        kind="counterfactuals",
        extra={"source_store": data.content_hash},
    )
    return root / "data"


@pytest.mark.parametrize("method", ["oracle", "oracle-multi"])
def test_oracle_uses_true_counterfactuals_and_never_targets_the_ood_domain(data_path, method):
    data = open_pretrain_data(method, data_path, default_cf_store(method, data_path))
    assert data.targets == [0, 1]
    assert data.sources.tolist() == list(range(16))
    assert data.cf_table.shape == (20, 3) and data.cf_table[4, 2] == 4 * 3 + 2
    # every counterfactual view drawn (p_cf 1) is the true one of its own image to the other ID domain, never to c
    batches = ViewBatches(
        data, method, batch_size=4, seed=0, p_replace=0.5, p_cf=1.0, n_cf_views=2 if "multi" in method else 1
    )
    n_cf = 0
    for epoch in range(3):
        for b in range(len(batches)):
            item = batches[(epoch, b, 0, 1)]
            pixels, groups = item["views"][:, 0, 0, 0].numpy().astype(int), item["groups"].numpy()
            source = pixels[:4][groups]  # image i is filled with i, its counterfactual for d with 100 + 10 d + i % 10
            cf = pixels >= 100
            assert (source < 16).all() and np.array_equal(pixels[~cf], source[~cf])
            assert np.array_equal((pixels[cf] - 100) // 10, 1 - source[cf] % 2)
            assert np.array_equal(pixels[cf] % 10, source[cf] % 10)
            n_cf += cf.sum()
    assert n_cf == 3 * 16


def test_view_batches_gather_the_planned_images(data_path):
    data = open_pretrain_data("oracle", data_path, data_path / "true_cf")
    batches = ViewBatches(data, "oracle", batch_size=4, seed=0, p_replace=0.5, p_cf=1.0, n_cf_views=1)
    item = batches[(0, 1, 0, 1)]
    assert item["views"].dtype == torch.uint8 and item["views"].shape == (8, 1, 8, 8)
    first, second = item["views"][:4, 0, 0, 0], item["views"][4:, 0, 0, 0]
    domains = first.numpy() % 2
    # second view: the counterfactual of the same image to the other in-distribution domain
    assert (second.numpy() == 100 + 10 * (1 - domains) + first.numpy() % 10).all()
    assert item["groups"].tolist() == [0, 1, 2, 3] * 2
    assert item["labels"].tolist() == (first.numpy() % 2).tolist()
    assert torch.equal(item["views"], batches[(0, 1, 0, 1)]["views"])  # a pure function of the key


def test_ranks_get_disjoint_images_and_epochs_reshuffle(data_path):
    data = open_pretrain_data("simclr", data_path, None)
    batches = ViewBatches(data, "simclr", batch_size=4, seed=0, p_replace=0.5, p_cf=1.0, n_cf_views=1)
    seen = [batches[(0, b, r, 2)]["views"][:4, 0, 0, 0].tolist() for b in range(2) for r in range(2)]
    assert sorted(sum(seen, [])) == list(range(16))
    assert batches[(1, 0, 0, 1)]["views"][:4].tolist() != batches[(0, 0, 0, 1)]["views"][:4].tolist()


def test_sampler_continues_from_the_global_step(data_path):
    data = open_pretrain_data("simclr", data_path, None)
    batches = ViewBatches(data, "simclr", batch_size=4, seed=0, p_replace=0.5, p_cf=1.0, n_cf_views=1)
    assert list(StepSampler(batches, lambda: (6, 0, 1))) == [(1, 2, 0, 1), (1, 3, 0, 1)]
    assert len(StepSampler(batches, lambda: (6, 0, 2))) == 2


def test_oracle_needs_a_synthetic_store_and_cf_methods_a_cf_store(tmp_path, data_path):
    meta = pd.DataFrame(
        {
            "index": [0, 1],
            "image_id": ["a", "b"],
            "patient_id": ["p", "q"],
            "split": "train",
            "domain": [0, 1],
            "label": [0, 1],
        }
    )
    write_store(tmp_path / "real", np.zeros((2, 8, 8), np.uint8), meta, DOMAINS, ["n", "y"])
    with pytest.raises(ConfigError, match="only the synthetic benchmark"):
        open_pretrain_data("oracle", tmp_path / "real", default_cf_store("oracle", tmp_path / "real"))
    with pytest.raises(ConfigError, match="needs a counterfactual store"):
        open_pretrain_data("simclr+", data_path, None)
    with pytest.raises(StoreError, match="not a counterfactual store"):
        open_pretrain_data("cf-simclr", data_path, data_path)
