import json

import numpy as np
import pandas as pd
import pytest

from cfcl.data.store import ImageStore, StoreWriter, write_store
from cfcl.errors import StoreError


def _meta(n, n_domains=2):
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "split": ["train"] * (n - 2) + ["test"] * 2,
            "domain": np.arange(n) % n_domains,
            "label": (np.arange(n) // 3) % 2,
        }
    )


def test_round_trip_is_memory_mapped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    store = write_store(tmp_path / "s", images, _meta(6), ["A", "B"], ["neg", "pos"], extra={"ood_domains": []})
    again = ImageStore.open(tmp_path / "s")
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, images)
    assert again.domains == ["A", "B"] and again.labels == ["neg", "pos"]
    assert again.size == (8, 8) and len(again) == 6
    assert again.content_hash == store.content_hash
    np.testing.assert_array_equal(again.indices("test"), [4, 5])
    np.testing.assert_array_equal(again.indices(["train"], domains=[1]), [1, 3])


def test_content_hash_changes_with_pixels(tmp_path):
    images = np.zeros((4, 4, 4), dtype=np.uint8)
    a = write_store(tmp_path / "a", images, _meta(4), ["A", "B"], ["n", "p"])
    images[0, 0, 0] = 1
    b = write_store(tmp_path / "b", images, _meta(4), ["A", "B"], ["n", "p"])
    assert a.content_hash != b.content_hash


def test_incomplete_and_incompatible_stores_are_refused(tmp_path):
    writer = StoreWriter(tmp_path / "s", 4, 4, 4, chunk=2)
    writer.write(0, np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(StoreError, match="incomplete"):
        ImageStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match="not written"):
        writer.finish(_meta(4), ["A", "B"], ["n", "p"])
    write_store(tmp_path / "v", np.zeros((4, 4, 4), np.uint8), _meta(4), ["A", "B"], ["n", "p"])
    info = json.loads((tmp_path / "v" / "store.json").read_text())
    info["version"] = 99
    (tmp_path / "v" / "store.json").write_text(json.dumps(info))
    with pytest.raises(StoreError, match="version 99"):
        ImageStore.open(tmp_path / "v")


def test_writer_resumes_written_chunks(tmp_path):
    images = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    first = StoreWriter(tmp_path / "s", 5, 3, 3, key="k", chunk=2)
    first.write(0, images[0:2])
    del first
    again = StoreWriter(tmp_path / "s", 5, 3, 3, key="k", chunk=2)
    assert again.pending() == [(2, 4), (4, 5)]
    for start, stop in again.pending():
        again.write(start, images[start:stop])
    store = again.finish(_meta(5), ["A", "B"], ["n", "p"])
    np.testing.assert_array_equal(store.images, images)
    other_key = StoreWriter(tmp_path / "t", 5, 3, 3, key="k", chunk=2)
    other_key.write(0, images[0:2])
    assert len(StoreWriter(tmp_path / "t", 5, 3, 3, key="other", chunk=2).pending()) == 3


def test_counterfactual_table(tmp_path):
    meta = pd.DataFrame({"index": [0, 1, 2], "source_index": [0, 0, 2], "target_domain": [1, 2, 0]})
    cf = write_store(tmp_path / "cf", np.zeros((3, 2, 2), np.uint8), meta, ["A", "B", "C"], ["n", "p"], kind="counterfactuals")
    table = cf.counterfactual_table(3, 3)
    assert table[0, 1] == 0 and table[0, 2] == 1 and table[2, 0] == 2
    assert (table[1] == -1).all()
    with pytest.raises(StoreError, match="beyond"):
        cf.counterfactual_table(2, 3)


def test_missing_metadata_column_is_named(tmp_path):
    meta = _meta(4).drop(columns=["patient_id"])
    with pytest.raises(StoreError, match="patient_id"):
        write_store(tmp_path / "s", np.zeros((4, 2, 2), np.uint8), meta, ["A", "B"], ["n", "p"])


def test_counterfactual_store_must_come_from_its_source(tmp_path):
    source = write_store(tmp_path / "src", np.zeros((2, 4, 4), np.uint8), _meta(2), ["A", "B"], ["n", "p"])
    other = write_store(tmp_path / "oth", np.ones((2, 4, 4), np.uint8), _meta(2), ["A", "B"], ["n", "p"])
    meta = pd.DataFrame({"index": [0, 1], "source_index": [0, 1], "target_domain": [1, 0]})
    cf = write_store(tmp_path / "cf", np.zeros((2, 4, 4), np.uint8), meta, ["A", "B"], ["n", "p"],
                     kind="counterfactuals", extra={"source_store": source.content_hash})
    cf.require_counterfactuals_of(source)
    with pytest.raises(StoreError, match="was made from store"):
        cf.require_counterfactuals_of(other)
    with pytest.raises(StoreError, match="not a counterfactual store"):
        source.require_counterfactuals_of(source)
    small = write_store(tmp_path / "small", np.zeros((2, 2, 2), np.uint8), _meta(2), ["A", "B"], ["n", "p"])
    cf_small = write_store(tmp_path / "cf2", np.zeros((2, 4, 4), np.uint8), meta, ["A", "B"], ["n", "p"],
                           kind="counterfactuals", extra={"source_store": small.content_hash})
    with pytest.raises(StoreError, match="4x4 images"):
        cf_small.require_counterfactuals_of(small)
