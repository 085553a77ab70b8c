"""Augmentations: presets resolve to the reference values, parameters are drawn per sample."""

import pytest
import torch

from cfcl.config import build_config
from cfcl.contrastive import augment as augment_module
from cfcl.contrastive.augment import AugmentConfig, build_augment
from cfcl.contrastive.geometry import view_maps
from cfcl.errors import ConfigError


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
    assert (demo.brightness, demo.contrast, demo.color_p) == (0.4, 0.4, 0.8)
    assert demo.gamma_p == demo.contrast_factor_p == demo.blur_p == demo.noise_p == 0  # nothing imitates a scanner
    acquisition = AugmentConfig(preset="acquisition").resolve()
    assert acquisition.crop_scale == demo.crop_scale and acquisition.color_p == 0
    assert (acquisition.gamma, acquisition.gamma_gain, acquisition.gamma_p) == ((0.6, 1.6), (0.75, 1.25), 0.8)
    assert (acquisition.noise_std, acquisition.noise_p, acquisition.blur_kernel, acquisition.blur_sigma) == (
        0.04,
        0.5,
        5,
        (0.1, 1.5),
    )


def test_pipelines_hold_their_preset_ops_in_order():
    demo = build_augment(AugmentConfig(preset="demo").resolve(), (64, 64))
    assert demo.ops == ("crop", "rotation", "brightness_contrast", "sharpness")
    acquisition = build_augment(AugmentConfig(preset="acquisition").resolve(), (64, 64))
    assert acquisition.ops == ("crop", "rotation", "gamma", "contrast_factor", "blur", "sharpness", "noise")
    chest = build_augment(AugmentConfig(preset="chest").resolve(), (64, 64))
    assert chest.ops == ("crop", "rotation", "hflip", "vflip", "brightness_contrast", "sharpness", "erasing")


def test_even_blur_kernel_is_a_config_error():
    with pytest.raises(ConfigError, match="blur_kernel"):
        build_config(AugmentConfig, overrides=["blur_kernel=4"])


def test_invalid_override_is_a_config_error():
    class Holder(AugmentConfig):
        pass

    with pytest.raises(ConfigError, match="hflip_p"):
        build_config(Holder, overrides=["hflip_p=2"]).resolve()


@pytest.mark.parametrize("preset", ["chest", "mammo", "demo", "acquisition"])
def test_views_keep_shape_and_range_and_differ_per_sample(preset):
    torch.manual_seed(0)
    augment = build_augment(AugmentConfig(preset=preset).resolve(), (24, 24))
    image = torch.rand(1, 1, 32, 32)
    views = augment(image.expand(8, -1, -1, -1).contiguous())
    assert views.shape == (8, 1, 24, 24) and views.dtype == torch.float32 and torch.isfinite(views).all()
    if preset != "acquisition":  # detector noise may leave [0, 1]
        assert views.min() >= 0 and views.max() <= 1
    distinct = {tuple(v.flatten()[:50].tolist()) for v in views}
    assert len(distinct) == 8  # same input, a different draw for every sample


@pytest.mark.parametrize("preset", ["chest", "acquisition"])
def test_same_seed_gives_the_same_views(preset):
    augment = build_augment(AugmentConfig(preset=preset).resolve(), (16, 16))
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(5)
    a = augment(x)
    torch.manual_seed(5)
    assert torch.equal(a, augment(x))
    assert not torch.equal(a, augment(x))  # the next draw differs


def record_calls(monkeypatch, names):
    """Wrap the intensity ops ``augment`` calls so their per-sample parameters are kept."""
    calls = {}
    for name in names:
        op = getattr(augment_module, name)

        def recorder(*args, op=op, name=name):
            calls[name] = args[1:]
            return op(*args)

        monkeypatch.setattr(augment_module, name, recorder)
    return calls


def drawn_share(values, neutral=1.0):
    return (values != neutral).float().mean().item()


def test_drawn_parameters_follow_the_configured_ranges_and_probabilities(monkeypatch):
    """Per-sample parameters: each op drawn with its probability, values uniform in its range."""
    n, tol = 6000, 0.03
    ops = ["gamma_gain", "scale_contrast", "gaussian_blur", "sharpen", "add_noise", "brightness_contrast", "erase"]
    calls = record_calls(monkeypatch, ops)
    acquisition = AugmentConfig(preset="acquisition").resolve()
    torch.manual_seed(0)
    build_augment(acquisition, (8, 8))(torch.rand(n, 1, 8, 8))
    gamma, gain = calls["gamma_gain"]
    assert abs(drawn_share(gamma) - acquisition.gamma_p) < tol
    applied = gamma != 1
    assert torch.equal(applied, gain != 1)  # gamma and gain are drawn together
    assert acquisition.gamma[0] <= gamma[applied].min() and gamma[applied].max() <= acquisition.gamma[1]
    assert abs(gamma[applied].mean().item() - sum(acquisition.gamma) / 2) < tol
    assert abs(gain[applied].mean().item() - sum(acquisition.gamma_gain) / 2) < tol
    (factor,) = calls["scale_contrast"]
    assert abs(drawn_share(factor) - acquisition.contrast_factor_p) < tol
    assert acquisition.contrast_factor[0] <= factor.min() and factor.max() <= acquisition.contrast_factor[1]
    (kernels,) = calls["gaussian_blur"]
    delta = torch.zeros(acquisition.blur_kernel)
    delta[acquisition.blur_kernel // 2] = 1
    blurred = (kernels != delta).any(1)
    assert abs(blurred.float().mean().item() - acquisition.blur_p) < tol
    assert kernels[blurred].max(1).values.min() > kernels.new_tensor(1 / acquisition.blur_kernel)  # sigma <= 1.5 peaks
    (sharpness,) = calls["sharpen"]
    assert abs(drawn_share(sharpness) - acquisition.sharpness_p) < tol
    assert acquisition.sharpness[0] <= sharpness.min() and sharpness.max() <= acquisition.sharpness[1]
    noise, std = calls["add_noise"]
    assert abs(drawn_share(std, 0.0) - acquisition.noise_p) < tol and torch.allclose(
        std.unique(), torch.tensor([0.0, acquisition.noise_std])
    )
    assert abs(noise.std().item() - 1) < tol

    chest = AugmentConfig(preset="chest").resolve()
    torch.manual_seed(0)
    build_augment(chest, (8, 8))(torch.rand(n, 1, 8, 8))
    brightness, contrast, contrast_first = calls["brightness_contrast"]
    applied = brightness != 1
    assert abs(applied.float().mean().item() - chest.color_p) < tol
    assert 1 - chest.brightness <= brightness.min() and brightness.max() <= 1 + chest.brightness
    assert 1 - chest.contrast <= contrast.min() and contrast.max() <= 1 + chest.contrast
    assert abs(brightness[applied].mean().item() - 1) < tol and abs(contrast_first.float().mean().item() - 0.5) < tol
    (boxes,) = calls["erase"]
    erased = boxes[:, 2] * boxes[:, 3] > 0
    assert abs(erased.float().mean().item() - chest.erasing_p) < tol


def test_rotation_and_flip_draws_follow_their_probabilities(monkeypatch):
    calls = {}

    def recording_view_maps(boxes, angles, hflip, vflip, size):
        calls.update(boxes=boxes, angles=angles, hflip=hflip, vflip=vflip)
        return view_maps(boxes, angles, hflip, vflip, size)

    monkeypatch.setattr(augment_module, "view_maps", recording_view_maps)
    params = AugmentConfig(preset="chest", rotation=30, rotation_p=0.4, hflip_p=0.2, vflip_p=0.7).resolve()
    torch.manual_seed(0)
    build_augment(params, (8, 8))(torch.rand(6000, 1, 8, 8))
    angles = calls["angles"]
    assert abs((angles != 0).float().mean().item() - 0.4) < 0.03 and angles.abs().max() <= 30
    assert abs(angles[angles != 0].abs().mean().item() - 15) < 1  # uniform in [-30, 30]
    assert (
        abs(calls["hflip"].float().mean().item() - 0.2) < 0.03
        and abs(calls["vflip"].float().mean().item() - 0.7) < 0.03
    )
