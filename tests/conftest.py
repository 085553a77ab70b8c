"""Fixtures shared by the tests of several folders (builders without pytest are in support/)."""

import pytest
import torch

from support.pretrain import noise_cf_store, noise_store


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with the session's intra-op thread count: a benchmark script's ``main`` run in
    the test process sets its own, and a later test comparing in-process numbers with another
    process's (same threads, same last bits) would fail for it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``data`` (a noise store), its counterfactual stores ``data/true_cf``, ``data/true_cf_renoised`` and ``cf``."""
    root = tmp_path_factory.mktemp("stores")
    data = noise_store(root / "data")
    noise_cf_store(root / "data" / "true_cf", data)
    noise_cf_store(root / "data" / "true_cf_renoised", data)
    noise_cf_store(root / "cf", data)
    return root
