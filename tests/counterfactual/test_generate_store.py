"""``cfcl cf generate``: what a counterfactual store keeps of its source images."""

import numpy as np

from cfcl.counterfactual import generate_store
from cfcl.counterfactual.config import CFGenerateConfig
from cfcl.data.store import ImageStore
from support.api import tiny_generator
from support.findings import FINDING_NAMES, findings_store


def test_a_counterfactual_store_carries_the_label_and_findings_of_its_source_images(tmp_path):
    store = findings_store(tmp_path / "data")
    tiny_generator(tmp_path / "gen", store)
    config = CFGenerateConfig(data=store.path, generator=tmp_path / "gen", progress_bar=False, device="cpu")
    generate_store.run(config, tmp_path / "cf")
    cf = ImageStore.open(tmp_path / "cf")
    cf.require_counterfactuals_of(store)
    source = cf.meta["source_index"].to_numpy()
    assert cf.findings == FINDING_NAMES and cf.labels == store.labels
    assert len(cf) == 2 * len(store.indices("train"))
    np.testing.assert_array_equal(cf.finding_matrix(), store.finding_matrix(source))  # missing ones stay missing
    assert np.isnan(cf.finding_matrix()).any()
    np.testing.assert_array_equal(cf.meta["label"], store.meta["label"].to_numpy()[source])
