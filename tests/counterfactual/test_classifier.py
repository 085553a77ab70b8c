"""Domain classifiers: class weights, checkpoints (and their errors), the training stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cfcl.cli import main
from cfcl.counterfactual.classifier.model import (
    balanced_class_weights,
    build_classifier,
    load_classifier,
    save_classifier,
)
from cfcl.errors import CheckpointError, ConfigError
from support.cf_stores import make_store


def test_class_weights_equalise_domains():
    weights = balanced_class_weights(np.array([0] * 6 + [1] * 3 + [2]), n_classes=4)
    # n / (k * count): 10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1); the absent domain gets 0.
    assert torch.allclose(weights, torch.tensor([10 / 18, 10 / 9, 10 / 3, 0.0]))
    counts = torch.tensor([6.0, 3.0, 1.0, 0.0])
    assert torch.allclose(weights * counts, torch.full((4,), 10 / 3) * (counts > 0))


@pytest.mark.parametrize("arch,kwargs", [("cnn", {"widths": [4, 8]}), ("small", {"width": 4, "blocks": [1, 1]})])
def test_classifier_roundtrip(tmp_path, arch, kwargs):
    torch.manual_seed(0)
    model = build_classifier(arch, 3, **kwargs)
    x = torch.rand(5, 1, 16, 16)
    model.eval()
    info = {
        "role": "judge",
        "parent": "domain",
        "values": ["a", "b", "c"],
        "trained_values": [0, 1, 2],
        "image_size": [16, 16],
        "seed": 7,
    }
    save_classifier(tmp_path, model, info)
    loaded, loaded_info = load_classifier(tmp_path)
    assert not loaded.training
    assert torch.allclose(loaded(x), model(x))
    assert loaded(x).shape == (5, 3)
    assert loaded_info["role"] == "judge" and loaded_info["arch"] == arch and loaded_info["seed"] == 7


def test_a_checkpoint_written_before_parents_loads_as_a_domain_classifier(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("cnn", 3, widths=[4])
    info = {
        "role": "judge",
        "parent": "domain",
        "values": ["a", "b", "c"],
        "trained_values": [0, 2],
        "image_size": [16, 16],
        "seed": 7,
    }
    path = save_classifier(tmp_path / "new.pt", model, info)
    old = torch.load(path, weights_only=True)
    for key, before in (("values", "domains"), ("trained_values", "trained_domains"), ("n_classes", "n_domains")):
        old[before] = old.pop(key)
    del old["parent"]
    torch.save(old, tmp_path / "old.pt")
    loaded, loaded_info = load_classifier(tmp_path / "old.pt")
    assert (loaded_info["parent"], loaded_info["values"], loaded_info["trained_values"]) == (
        "domain",
        ["a", "b", "c"],
        [0, 2],
    )
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))


def test_fine_tuning_takes_one_guide_of_each_conditioned_parent_and_refuses_bad_guides(tmp_path):
    from cfcl.counterfactual.generator.finetune import load_guides
    from cfcl.counterfactual.parents import ParentSpec

    domain = ParentSpec("domain", "discrete", 3, (0, 1, 2), ("a", "b", "c"))
    sex = ParentSpec("sex", "discrete", 2, (0, 1), ("F", "M"), categories=("F", "M"))
    generator = tmp_path / "gen" / "generator.pt"

    def guide(name, parent, values, role="guide"):
        info = {
            "role": role,
            "parent": parent,
            "values": values,
            "trained_values": list(range(len(values))),
            "image_size": [16, 16],
            "seed": 0,
        }
        save_classifier(tmp_path / name, build_classifier("cnn", len(values), widths=[4]), info)
        return tmp_path / name

    scanner, of_sex = guide("scanner", "domain", ["a", "b", "c"]), guide("sex", "sex", ["F", "M"])
    assert list(load_guides([scanner, of_sex], [domain, sex], generator)) == ["domain", "sex"]
    assert list(load_guides([of_sex], [domain, sex], generator)) == ["sex"]
    refused = [
        (
            [scanner, guide("scanner2", "domain", ["a", "b", "c"])],
            [domain],
            ConfigError,
            r"/scanner2 classifies 'domain' as another guide does; fine-tuning takes one guide per parent",
        ),
        (
            [scanner, of_sex],
            [domain],
            ConfigError,
            rf"/sex classifies 'sex'; generator {generator} was conditioned on domain only",
        ),
        (
            [guide("renamed", "sex", ["female", "male"])],
            [domain, sex],
            CheckpointError,
            r"/renamed names the values of 'sex' \['female', 'male'\]; generator .* names them \['F', 'M'\]",
        ),
        (
            [guide("judge", "sex", ["F", "M"], role="judge")],
            [domain, sex],
            ConfigError,
            r"/judge is a 'judge' classifier; fine-tuning needs a guide \(the judge never guides\)",
        ),
        (
            [of_sex],
            [domain, ParentSpec("sex", "discrete", 2, (1,), ("F", "M"))],
            ConfigError,
            r"cannot guide parent 'sex' of generator .*: it has one value \(M\) in the training split",
        ),
    ]
    for paths, specs, error, message in refused:
        with pytest.raises(error, match=message) as raised:
            load_guides(paths, specs, generator)
        assert "\n" not in str(raised.value)


def test_classifier_checkpoint_errors(tmp_path):
    model = build_classifier("cnn", 3, widths=[4, 8])
    info = {
        "role": "guide",
        "parent": "domain",
        "values": ["a", "b", "c"],
        "trained_values": [0, 1, 2],
        "image_size": [16, 16],
        "seed": 0,
    }
    path = save_classifier(tmp_path / "c.pt", model, info)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt") as error:
        load_classifier(corrupt)
    assert "\n" not in str(error.value)

    foreign = tmp_path / "encoder.pt"
    torch.save({"arch": "small", "state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a cfcl classifier"):
        load_classifier(foreign)

    other_arch = torch.load(path, weights_only=True)
    other_arch["arch"], other_arch["arch_kwargs"] = "small", {"width": 4, "blocks": [1]}
    torch.save(other_arch, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not match its architecture 'small'"):
        load_classifier(tmp_path / "other.pt")

    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="unknown classifier architecture"):
        build_classifier("vgg16", 3)


@pytest.mark.slow
def test_cli_trains_guide_and_judge(tmp_path):
    store = make_store(tmp_path / "store")
    common = [
        "--data",
        str(store.path),
        "--set",
        "trainer.max_epochs=12",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        "batch_size=16",
        "--set",
        "lr=0.01",
        "--set",
        "patience=8",
    ]  # room to leave a plateau
    assert (
        main(
            [
                "cf",
                "classifier",
                "--config",
                "cf_guide",
                "--out",
                str(tmp_path / "guide"),
                *common,
                "--set",
                "arch_kwargs.widths=[8,16]",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "cf",
                "classifier",
                "--config",
                "cf_judge",
                "--out",
                str(tmp_path / "judge"),
                *common,
                "--set",
                "arch_kwargs.width=4",
            ]
        )
        == 0
    )

    guide, guide_info = load_classifier(tmp_path / "guide")
    judge, judge_info = load_classifier(tmp_path / "judge")
    assert (guide_info["role"], judge_info["role"]) == ("guide", "judge")
    assert guide_info["arch"] != judge_info["arch"] and guide_info["seed"] != judge_info["seed"]
    assert guide_info["parent"] == "domain" and guide_info["values"] == ["major", "middle", "rare", "ood"]
    assert guide_info["trained_values"] == [0, 1, 2]
    # gamma curves are trivially separable: both must beat chance (1/3) by far on held-out images
    for info in (guide_info, judge_info):
        assert info["val_balanced_accuracy"] >= 0.8 and info["test_balanced_accuracy"] >= 0.8
    manifest = json.loads((tmp_path / "judge" / "manifest.json").read_text())
    assert (
        manifest["status"] == "complete"
        and manifest["metrics"]["val"]["balanced_accuracy"] == judge_info["val_balanced_accuracy"]
    )

    # same config and seed -> same weights
    assert (
        main(
            [
                "cf",
                "classifier",
                "--config",
                "cf_guide",
                "--out",
                str(tmp_path / "guide2"),
                *common,
                "--set",
                "arch_kwargs.widths=[8,16]",
            ]
        )
        == 0
    )
    again, _ = load_classifier(tmp_path / "guide2")
    for a, b in zip(guide.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_classifier_bad_input(tmp_path, capsys):
    assert main(["cf", "classifier", "--out", str(tmp_path / "c")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["cf", "classifier", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err
    store = make_store(tmp_path / "store")
    assert (
        main(["cf", "classifier", "--data", str(store.path), "--set", "val_split=nope", "--out", str(tmp_path / "c")])
        == 2
    )
    assert "split(s) nope" in capsys.readouterr().err


def test_affine_warp_matches_kornia_random_affine_warp():
    import kornia

    from cfcl.counterfactual.classifier.module import affine_warp

    x = torch.rand(4, 1, 20, 28, generator=torch.Generator().manual_seed(0))
    angles, scales = torch.tensor([0.0, 5.0, -30.0, 12.0]), torch.tensor([1.0, 1.05, 0.9, 1.2])
    shifts = torch.tensor([[0.0, 0.0], [1.3, -0.7], [2.0, 3.0], [-1.0, 0.5]])
    centre = torch.tensor([[28 / 2 - 0.5, 20 / 2 - 0.5]]).expand(4, -1)
    matrix = kornia.geometry.transform.get_affine_matrix2d(shifts, centre, scales[:, None].repeat(1, 2), angles)
    ref = kornia.geometry.transform.warp_affine(x, matrix[:, :2], (20, 28), padding_mode="border", align_corners=False)
    torch.testing.assert_close(affine_warp(x, angles, shifts, scales), ref, atol=1e-5, rtol=0)


def test_classifier_jitter_moves_images_within_its_ranges_and_keeps_shape_and_range():
    from cfcl.counterfactual.classifier.module import AffineJitter
    from cfcl.counterfactual.config import JitterConfig

    torch.manual_seed(0)
    x = torch.rand(16, 1, 24, 32)
    out = AffineJitter(JitterConfig())(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    changed = (out - x).abs().flatten(1).amax(1) > 1e-3
    assert 8 <= changed.sum() < 16  # p = 0.8 per sample; the others pass unchanged
    assert torch.equal(out[~changed], x[~changed])
    assert torch.equal(AffineJitter(JitterConfig(p=0.0))(x), x)
    dot = torch.zeros(64, 1, 41, 41)
    dot[:, :, 20, 20] = 1
    moved = AffineJitter(JitterConfig(p=1.0, degrees=0.0, scale=0.0, translate=0.1))(dot)
    xs = (moved.sum(2).squeeze(1) * torch.arange(41)).sum(1) / moved.sum((1, 2, 3))
    assert (xs - 20).abs().max() <= 0.1 * 41 and (xs > 21).any() and (xs < 19).any()
