"""Fixtures shared by the tests of several folders (builders without pytest are in support/)."""

import pytest

from support.pretrain import noise_cf_store, noise_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``data`` (a noise store), its counterfactual stores ``data/true_cf``, ``data/true_cf_renoised`` and ``cf``."""
    root = tmp_path_factory.mktemp("stores")
    data = noise_store(root / "data")
    noise_cf_store(root / "data" / "true_cf", data)
    noise_cf_store(root / "data" / "true_cf_renoised", data)
    noise_cf_store(root / "cf", data)
    return root
