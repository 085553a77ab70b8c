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
    cf = write_store(
        tmp_path / "cf", np.zeros((3, 2, 2), np.uint8), meta, ["A", "B", "C"], ["n", "p"], kind="counterfactuals"
    )
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
    cf = write_store(
        tmp_path / "cf",
        np.zeros((2, 4, 4), np.uint8),
        meta,
        ["A", "B"],
        ["n", "p"],
        kind="counterfactuals",
        extra={"source_store": source.content_hash},
    )
    cf.require_counterfactuals_of(source)
    with pytest.raises(StoreError, match="was made from store"):
        cf.require_counterfactuals_of(other)
    with pytest.raises(StoreError, match="not a counterfactual store"):
        source.require_counterfactuals_of(source)
    small = write_store(tmp_path / "small", np.zeros((2, 2, 2), np.uint8), _meta(2), ["A", "B"], ["n", "p"])
    cf_small = write_store(
        tmp_path / "cf2",
        np.zeros((2, 4, 4), np.uint8),
        meta,
        ["A", "B"],
        ["n", "p"],
        kind="counterfactuals",
        extra={"source_store": small.content_hash},
    )
    with pytest.raises(StoreError, match="4x4 images"):
        cf_small.require_counterfactuals_of(small)


def test_single_label_store_is_written_as_before(tmp_path):
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    store = write_store(tmp_path / "s", images, _meta(6), ["A", "B"], ["neg", "pos"], extra={"ood_domains": []})
    assert store.content_hash == "abca9e2b2274b397"  # the hash this store had before stores had findings
    assert "findings" not in store.info and store.findings == []
    assert (tmp_path / "s/metadata.csv").read_text().splitlines()[0] == "index,image_id,patient_id,split,domain,label"
    with pytest.raises(StoreError, match="single-label: its store.json lists no findings"):
        store.finding_matrix()


ANY = ["negative", "any finding"]


def _with_findings():
    return _meta(6).assign(
        **{
            "label": [1, 0, 1, 1, 0, 0],
            "finding_Edema": [1, 0, np.nan, 1, 0, 0],
            "finding_Pleural Effusion": [0.0, np.nan, 1, 1, 0, 0],
        }
    )


def test_findings_are_written_read_and_hashed(tmp_path):
    images = np.zeros((6, 2, 2), np.uint8)
    store = write_store(
        tmp_path / "s", images, _with_findings(), ["A", "B"], ANY, extra={"findings": ["Edema", "Pleural Effusion"]}
    )
    again = ImageStore.open(tmp_path / "s")
    assert again.findings == ["Edema", "Pleural Effusion"] and again.content_hash == store.content_hash
    expected = np.array([[1, 0], [0, np.nan], [np.nan, 1], [1, 1], [0, 0], [0, 0]])
    np.testing.assert_array_equal(again.finding_matrix(), expected)
    np.testing.assert_array_equal(again.finding_matrix([3, 1]), expected[[3, 1]])
    assert again.finding_matrix().dtype == np.float64
    written = pd.read_csv(tmp_path / "s/metadata.csv", dtype=str, keep_default_na=False)
    assert list(written["finding_Edema"]) == ["1", "0", "", "1", "0", "0"]  # 1 / 0 / empty = missing
    other = _with_findings()
    other.loc[1, "finding_Pleural Effusion"] = 0  # missing -> absent
    changed = write_store(
        tmp_path / "t", images, other, ["A", "B"], ANY, extra={"findings": ["Edema", "Pleural Effusion"]}
    )
    swapped = write_store(
        tmp_path / "u", images, _with_findings(), ["A", "B"], ANY, extra={"findings": ["Pleural Effusion", "Edema"]}
    )
    assert len({store.content_hash, changed.content_hash, swapped.content_hash}) == 3
    np.testing.assert_array_equal(swapped.finding_matrix(), expected[:, ::-1])


def test_bad_findings_are_refused_naming_the_column(tmp_path):
    images = np.zeros((6, 2, 2), np.uint8)
    bad = _with_findings().assign(finding_Edema=[1, 0, 2, 1, 0, 0])
    with pytest.raises(
        StoreError, match=r"column 'finding_Edema' holds 2; expected 1 \(present\), 0 \(absent\) or empty"
    ):
        write_store(tmp_path / "s", images, bad, ["A", "B"], ANY, extra={"findings": ["Edema"]})
    with pytest.raises(StoreError, match="finding_Oedema"):
        write_store(tmp_path / "s", images, _with_findings(), ["A", "B"], ANY, extra={"findings": ["Oedema"]})
    with pytest.raises(StoreError, match="distinct"):
        write_store(tmp_path / "s", images, _with_findings(), ["A", "B"], ANY, extra={"findings": ["Edema", "Edema"]})
    for labels, label in ((["n", "p"], [1, 0, 1, 1, 0, 0]), (ANY, [1, 0, 0, 1, 0, 0])):  # label is not "any finding"
        with pytest.raises(StoreError, match="label is 1 exactly where some finding is 1"):
            write_store(
                tmp_path / "s",
                images,
                _with_findings().assign(label=label),
                ["A", "B"],
                labels,
                extra={"findings": ["Edema", "Pleural Effusion"]},
            )
    assert not (tmp_path / "s/store.json").exists()
    write_store(
        tmp_path / "s",
        images,
        _with_findings().assign(label=[1, 0, 0, 1, 0, 0]),
        ["A", "B"],
        ANY,
        extra={"findings": ["Edema"]},
    )
    csv = tmp_path / "s/metadata.csv"
    edited = pd.read_csv(csv, dtype=str, keep_default_na=False)
    edited.loc[3, "finding_Edema"] = "yes"
    edited.to_csv(csv, index=False)
    with pytest.raises(StoreError, match=r"/s: metadata.csv: column 'finding_Edema' holds 'yes'"):
        ImageStore.open(tmp_path / "s")
