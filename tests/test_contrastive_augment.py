"""Augmentations: presets resolve to the reference values, parameters are drawn per sample."""

import pytest
import torch

from cfcl.contrastive.augment import AugmentConfig, build_augment
from cfcl.errors import ConfigError
from cfcl.config import build_config


def test_presets_hold_the_reference_settings_and_accept_overrides():
    chest = AugmentConfig(preset="chest").resolve()
    assert chest.crop_scale == (0.3, 0.99) and chest.rotation == 90 and chest.hflip_p == chest.vflip_p == 0.5
    assert chest.brightness == chest.contrast == 0.4
    assert chest.erasing_p == 0.5 and chest.erasing_scale == (0.05, 0.30)
    assert chest.sharpness == (0.0, 2.0) and chest.sharpness_p == 0.5
    mammo = AugmentConfig(preset="mammo").resolve()
    assert mammo.crop_scale == (0.3, 0.9) and mammo.rotation == 45 and mammo.erasing_scale == (0.05, 0.10)
    assert AugmentConfig(preset="mammo", rotation=10).resolve().rotation == 10
    demo = AugmentConfig(preset="demo").resolve()  # docs/benchmark.md, "Demo augmentations"
    assert demo.crop_scale == (0.6, 1.0) and demo.hflip_p == demo.vflip_p == demo.erasing_p == 0
    assert (demo.gamma, demo.gamma_gain, demo.gamma_p) == ((0.6, 1.6), (0.75, 1.25), 0.8)
    assert (demo.noise_std, demo.noise_p, demo.blur_kernel, demo.blur_sigma) == (0.04, 0.5, 5, (0.1, 1.5))


def test_demo_pipeline_has_the_benchmark_ops_in_order():
    names = [type(op).__name__ for op in build_augment(AugmentConfig(preset="demo").resolve(), (64, 64))]
    assert names == ["RandomResizedCrop", "RandomRotation", "RandomGamma", "RandomContrast",
                     "RandomGaussianBlur", "RandomSharpness", "RandomGaussianNoise"]


def test_invalid_override_is_a_config_error():
    class Holder(AugmentConfig):
        pass

    with pytest.raises(ConfigError, match="hflip_p"):
        build_config(Holder, overrides=["hflip_p=2"]).resolve()


@pytest.mark.parametrize("preset", ["chest", "mammo", "demo"])
def test_views_keep_shape_and_range_and_differ_per_sample(preset):
    torch.manual_seed(0)
    augment = build_augment(AugmentConfig(preset=preset).resolve(), (24, 24))
    image = torch.rand(1, 1, 32, 32)
    views = augment(image.expand(8, -1, -1, -1).contiguous())
    assert views.shape == (8, 1, 24, 24) and views.dtype == torch.float32 and torch.isfinite(views).all()
    if preset != "demo":  # the demo adds detector noise, which may leave [0, 1]
        assert views.min() >= 0 and views.max() <= 1
    distinct = {tuple(v.flatten()[:50].tolist()) for v in views}
    assert len(distinct) == 8  # same input, a different draw for every sample


def test_same_seed_gives_the_same_views():
    augment = build_augment(AugmentConfig(preset="chest").resolve(), (16, 16))
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(5)
    a = augment(x)
    torch.manual_seed(5)
    assert torch.equal(a, augment(x))
