"""The public Python API: cfcl.load_encoder / embed / load_generator / read_images / ImageStore."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cfcl
from cfcl.counterfactual.generator.inference import counterfactual
from cfcl.data.imageio import DecodeOptions, decode
from cfcl.data.inputs import decode_options_of
from cfcl.data.prepare import PrepareConfig
from cfcl.data.prepare import run as prepare
from cfcl.evaluation.features import extract_features
from support.api import scanner_store, tiny_generator
from support.dicom import write_dicom
from support.evaluation import tiny_encoder


def as_unit(images: np.ndarray) -> torch.Tensor:
    """Store rows uint8 [B, H, W] as the float [B, 1, H, W] in [0, 1] the models take."""
    return torch.from_numpy(np.array(images)).float().div(255).unsqueeze(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    store = scanner_store(root / "data")
    tiny_generator(root / "gen", store)
    tiny_encoder(root / "enc", "cf-simclr", 0, size=16)
    return root, store


def test_top_level_names_are_exactly_the_public_api_and_import_stays_light():
    assert sorted(cfcl.__all__) == [
        "CfclError",
        "Generator",
        "ImageStore",
        "embed",
        "load_encoder",
        "load_generator",
        "read_images",
    ]
    assert all(callable(getattr(cfcl, name)) for name in cfcl.__all__)
    with pytest.raises(AttributeError):
        cfcl.build_encoder  # noqa: B018 - internal names stay internal
    code = "import sys, cfcl; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_load_encoder_records_its_input_convention_and_embed_matches_the_evaluation_features(run):
    root, store = run
    encoder = cfcl.load_encoder(root / "enc")
    assert not encoder.training and encoder.input_size == (16, 16) and encoder.input_channels == 1
    assert encoder.input_range == (0.0, 1.0) and encoder.info["method"] == "cf-simclr"
    reference = extract_features(encoder, np.asarray(store.images))
    from_store = cfcl.embed(encoder, store, batch_size=7)
    assert from_store.dtype == np.float32 and from_store.shape == (len(store), encoder.feature_dim)
    np.testing.assert_allclose(from_store, reference, atol=1e-5)
    floats = as_unit(store.images[:10])
    np.testing.assert_allclose(cfcl.embed(encoder, floats), reference[:10], atol=1e-5)
    np.testing.assert_allclose(cfcl.embed(encoder, str(store.path))[:3], reference[:3], atol=1e-5)
    assert cfcl.embed(encoder, np.zeros((0, 16, 16), np.uint8)).shape == (0, encoder.feature_dim)


@pytest.mark.parametrize(
    "images, found",
    [
        (torch.rand(2, 1, 20, 20), "1-channel 20x20"),
        (torch.rand(2, 3, 16, 16), "3-channel 16x16"),
        (np.zeros((4, 32, 32), np.uint8), "1-channel 32x32"),
    ],
)
def test_embed_refuses_images_the_encoder_does_not_take_naming_both(run, images, found):
    root, _ = run
    with pytest.raises(cfcl.CfclError, match=f"images are {found} .*takes 1-channel 16x16 images") as error:
        cfcl.embed(cfcl.load_encoder(root / "enc"), images)
    assert "\n" not in str(error.value)


def test_embed_refuses_float_images_outside_the_unit_range(run):
    root, _ = run
    with pytest.raises(cfcl.CfclError, match=r"values in \[0, 255\].*in \[0, 1\]"):
        cfcl.embed(
            cfcl.load_encoder(root / "enc"), torch.full((2, 1, 16, 16), 255.0).index_fill_(0, torch.tensor([0]), 0.0)
        )


def test_generator_speaks_scanner_names_and_matches_the_internal_counterfactual(run):
    root, store = run
    generator = cfcl.load_generator(root / "gen")
    assert generator.scanners == ["flatpanel", "cr_plate", "portable"] and generator.parents == ["domain"]
    assert generator.image_size == 16
    x = as_unit(store.images[:4])
    sources = ["flatpanel", "cr_plate", "portable", "flatpanel"]
    by_name = generator.counterfactual(x, {"domain": sources}, target="portable")
    expected = counterfactual(
        generator.model, x, {"domain": torch.tensor([0, 1, 2, 0])}, {"domain": torch.full((4,), 2)}
    )
    assert torch.equal(by_name, expected)
    assert torch.equal(
        generator.counterfactual(np.asarray(store.images[:4]), {"domain": [0, 1, 2, 0]}, target=2), expected
    )
    assert torch.equal(generator.counterfactual(x, {"domain": sources}, target={"domain": "portable"}), expected)
    state = generator.abduct(x, {"domain": sources})
    torch.testing.assert_close(generator.predict(state, {"domain": sources}), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("target", ["legacy", "no_such_scanner", 7])
def test_generator_refuses_a_scanner_it_was_not_trained_on_naming_those_it_knows(run, target):
    root, store = run
    generator = cfcl.load_generator(root / "gen")
    x = as_unit(store.images[:2])
    with pytest.raises(
        cfcl.CfclError, match=f"not trained on scanner {target!r} .*it knows: flatpanel, cr_plate, portable"
    ):
        generator.counterfactual(x, {"domain": "flatpanel"}, target=target)


def test_generator_refuses_wrong_images_and_parents(run):
    root, _ = run
    generator = cfcl.load_generator(root / "gen")
    with pytest.raises(cfcl.CfclError, match="images are 3-channel 16x16 .*takes 1-channel 16x16"):
        generator.counterfactual(torch.rand(1, 3, 16, 16), {"domain": "flatpanel"}, "portable")
    with pytest.raises(cfcl.CfclError, match="no parent.*age"):
        generator.counterfactual(torch.rand(1, 1, 16, 16), {"domain": "flatpanel", "age": 3}, "portable")
    with pytest.raises(cfcl.CfclError, match="2 values for 1 images"):
        generator.counterfactual(torch.rand(1, 1, 16, 16), {"domain": ["flatpanel", "portable"]}, "portable")


def test_read_images_decodes_files_exactly_as_prepare_made_the_store(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    rng = np.random.default_rng(1)
    files, rows = [], []
    for i in range(6):
        if i % 2:
            path = write_dicom(
                root / f"{i}.dcm",
                rng.integers(0, 4000, (24, 20)).astype(np.uint16),
                PhotometricInterpretation="MONOCHROME1",
            )
        else:
            path = root / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (20, 28)).astype(np.uint8)).save(path)
        files.append(path)
        rows.append(f"{path.name},{'ab'[i % 2]},{'no' if i < 3 else 'yes'},p{i}")
    (root / "table.csv").write_text("path,domain,label,patient_id\n" + "\n".join(rows) + "\n")
    config = PrepareConfig.model_validate(
        {
            "dataset": "csv",
            "root": str(root),
            "size": 12,
            "normalise": "percentile",
            "percentiles": [2, 98],
            "csv": {"file": "table.csv"},
        }
    )
    prepare(config, tmp_path / "store")
    store = cfcl.ImageStore.open(tmp_path / "store")
    options, recorded = decode_options_of(store)
    assert recorded and options == DecodeOptions(12, 12, "percentile", (2.0, 98.0))
    order = [store.meta.index[store.meta["image_id"] == f.name][0] for f in files]
    images = cfcl.read_images(files, store.path)
    assert images.dtype == torch.float32 and images.shape == (6, 1, 12, 12)
    assert torch.equal((images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(np.asarray(store.images[order])))
    assert not np.array_equal(decode(files[1], DecodeOptions(12, 12)), np.asarray(store.images[order[1]]))


def test_read_images_uses_prepare_defaults_for_a_store_without_a_decoding_record(run, tmp_path):
    _, store = run
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 20)).astype(np.uint8)).save(path)
    assert decode_options_of(store) == (DecodeOptions(16, 16), False)
    expected = torch.from_numpy(decode(path, DecodeOptions(16, 16))).float() / 255
    assert torch.equal(cfcl.read_images([path], store)[0, 0], expected)
