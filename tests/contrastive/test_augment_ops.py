"""The hand-written augmentation ops against identities, kornia / torchvision and their parameter ranges."""

import math

import kornia
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from cfcl.contrastive.geometry import sample_crop_boxes, view_maps, warp_views
from cfcl.contrastive.intensity import (
    add_noise,
    brightness_contrast,
    erase,
    gamma_gain,
    gaussian_blur,
    gaussian_kernels,
    sample_erase_boxes,
    scale_contrast,
    sharpen,
)

CPU = torch.device("cpu")


def smooth_images(n: int, height: int, width: int) -> torch.Tensor:
    """Low-frequency images in (0, 1), a different one per sample: interpolation differences stay tiny."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    phase = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return 0.5 + 0.3 * torch.sin(3 * xs + phase) * torch.cos(2 * ys - phase) + 0.1 * xs


def maps(boxes, angles, hflip, vflip, size):
    n = len(boxes)
    return view_maps(
        torch.as_tensor(boxes, dtype=torch.float32).view(n, 4),
        torch.as_tensor(angles, dtype=torch.float32),
        torch.as_tensor(hflip),
        torch.as_tensor(vflip),
        size,
    )


def test_identity_parameters_give_the_input_back():
    x = torch.rand(3, 1, 12, 16)
    out = warp_views(x, *maps([[0, 0, 16, 12]] * 3, [0.0] * 3, [False] * 3, [False] * 3, (12, 16)), (12, 16))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hflip,vflip,dims", [(True, False, [-1]), (False, True, [-2]), (True, True, [-2, -1])])
def test_a_pure_flip_is_torch_flip(hflip, vflip, dims):
    x = torch.rand(2, 1, 10, 14)
    out = warp_views(x, *maps([[0, 0, 14, 10]] * 2, [0.0] * 2, [hflip] * 2, [vflip] * 2, (10, 14)), (10, 14))
    torch.testing.assert_close(out, x.flip(dims), atol=1e-5, rtol=0)


def test_a_quarter_turn_is_rot90_counter_clockwise():
    x = torch.rand(1, 1, 9, 9)
    out = warp_views(x, *maps([[0, 0, 9, 9]], [90.0], [False], [False], (9, 9)), (9, 9))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_a_full_image_crop_without_rotation_is_a_resize():
    x = torch.rand(2, 1, 20, 30)
    out = warp_views(x, *maps([[0, 0, 30, 20]] * 2, [0.0] * 2, [False] * 2, [False] * 2, (13, 17)), (13, 17))
    torch.testing.assert_close(
        out, F.interpolate(x, size=(13, 17), mode="bilinear", align_corners=True), atol=1e-5, rtol=0
    )


def test_one_resampling_matches_crop_then_rotate_then_flip():
    """Independent path: slice + resize (kornia's crop), kornia's rotate with zero fill, torch.flip."""
    torch.manual_seed(0)
    n, size = 6, (24, 24)
    x = smooth_images(n, 40, 36)
    boxes = sample_crop_boxes(n, (40, 36), (0.3, 0.99), (0.75, 4 / 3), CPU)
    angles = torch.tensor([0.0, 30, -45, 90, 10, -80])
    hflip, vflip = torch.tensor([0, 1, 0, 1, 0, 1]).bool(), torch.tensor([0, 0, 1, 1, 1, 0]).bool()
    out = warp_views(x, *view_maps(boxes, angles, hflip, vflip, size), size)
    for i in range(n):
        x0, y0, w, h = (int(v) for v in boxes[i])
        ref = F.interpolate(x[i : i + 1, :, y0 : y0 + h, x0 : x0 + w], size=size, mode="bilinear", align_corners=True)
        ref = kornia.geometry.transform.rotate(ref, angles[i : i + 1], align_corners=True)
        ref = ref.flip(-1) if hflip[i] else ref
        ref = ref.flip(-2) if vflip[i] else ref
        torch.testing.assert_close(out[i : i + 1], ref, atol=2e-3, rtol=0)
    assert (out[2:3] == 0).any()  # a rotated crop has zero-filled corners


def test_crop_boxes_fit_the_image_and_follow_scale_and_ratio():
    torch.manual_seed(1)
    x0, y0, w, h = sample_crop_boxes(5000, (64, 40), (0.3, 0.99), (0.75, 4 / 3), CPU).unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 40).all() and (y0 + h <= 64).all()
    assert torch.equal(x0, x0.round()) and torch.equal(w, w.round())
    # A square image and scales whose boxes always fit: the draws are not truncated.
    size, scale, ratio = 64, (0.3, 0.6), (0.75, 4 / 3)
    x0, y0, w, h = sample_crop_boxes(20000, (size, size), scale, ratio, CPU).unbind(1)
    area = w * h / size**2
    assert area.min() >= scale[0] - 4 / size and area.max() <= scale[1] + 4 / size  # a pixel of rounding per side
    aspect = w / h
    assert aspect.min() >= ratio[0] * 0.95 and aspect.max() <= ratio[1] / 0.95
    assert abs(area.mean().item() - sum(scale) / 2) < 0.01  # uniform area: mean at the middle
    assert abs(aspect.log().mean().item() - sum(math.log(r) for r in ratio) / 2) < 0.01  # log-uniform ratio
    assert 0.45 < (x0 / (size - w)).mean().item() < 0.55  # corner uniform over the positions that fit


def test_gamma_and_contrast_factor_match_kornia():
    x = torch.rand(4, 1, 8, 8)
    gamma, gain, factor = (
        torch.tensor([0.6, 1.0, 1.6, 1.2]),
        torch.tensor([0.75, 1.0, 1.25, 0.9]),
        torch.tensor([0.6, 1, 1.4, 0.8]),
    )
    torch.testing.assert_close(gamma_gain(x, gamma, gain), kornia.enhance.adjust_gamma(x, gamma, gain))
    torch.testing.assert_close(scale_contrast(x, factor), kornia.enhance.adjust_contrast(x, factor))
    assert torch.equal(gamma_gain(x, torch.ones(4), torch.ones(4)), x)
    assert torch.equal(scale_contrast(x, torch.ones(4)), x)


def test_brightness_contrast_is_torchvision_color_jitter_in_the_drawn_order():
    x = torch.rand(4, 1, 8, 8)
    brightness, contrast = torch.tensor([0.6, 1.4, 1.0, 1.3]), torch.tensor([1.4, 0.6, 0.7, 1.0])
    contrast_first = torch.tensor([False, True, True, False])
    out = brightness_contrast(x, brightness, contrast, contrast_first)
    for i in range(4):
        b, c = float(brightness[i]), float(contrast[i])
        if contrast_first[i]:
            ref = TF.adjust_brightness(TF.adjust_contrast(x[i], c), b)
        else:
            ref = TF.adjust_contrast(TF.adjust_brightness(x[i], b), c)
        torch.testing.assert_close(out[i], ref)
    assert torch.equal(brightness_contrast(x, torch.ones(4), torch.ones(4), contrast_first), x)


def test_gaussian_blur_matches_kornia_per_sample_and_a_delta_kernel_is_the_identity():
    x = torch.rand(3, 1, 16, 12)
    sigma = torch.tensor([0.3, 1.0, 1.5])
    kernels = gaussian_kernels(sigma, 5)
    for s, k in zip(sigma, kernels):
        torch.testing.assert_close(k, kornia.filters.get_gaussian_kernel1d(5, float(s)).view(5))
    ref = kornia.filters.gaussian_blur2d(x, (5, 5), sigma[:, None].expand(-1, 2), border_type="reflect")
    torch.testing.assert_close(gaussian_blur(x, kernels), ref)
    delta = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]).expand(3, 5)
    torch.testing.assert_close(gaussian_blur(x, delta), x, atol=1e-7, rtol=0)


def test_sharpen_matches_kornia_per_sample_and_factor_one_is_the_identity():
    x = torch.rand(4, 1, 10, 9)
    factor = torch.tensor([0.0, 0.5, 1.7, 2.0])
    torch.testing.assert_close(sharpen(x, factor), kornia.enhance.sharpness(x, factor))
    assert torch.equal(sharpen(x, torch.ones(4)), x)


def test_noise_is_added_per_sample_and_zero_std_leaves_the_sample():
    torch.manual_seed(2)
    x = torch.rand(3, 1, 64, 64)
    out = add_noise(x, torch.randn_like(x), torch.tensor([0.0, 0.04, 0.2]))
    assert torch.equal(out[0], x[0])
    assert abs((out[1] - x[1]).std().item() - 0.04) < 0.004 and abs((out[2] - x[2]).std().item() - 0.2) < 0.02


def test_erase_zeroes_exactly_the_box():
    x = torch.rand(2, 1, 10, 12) + 0.1
    out = erase(x, torch.tensor([[2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0]]))
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[3:8, 2:6] = True
    assert (out[0, 0][mask] == 0).all() and torch.equal(out[0, 0][~mask], x[0, 0][~mask])
    assert torch.equal(out[1], x[1])  # an empty box erases nothing


def test_erase_boxes_fit_and_follow_the_scale():
    torch.manual_seed(3)
    height, width, scale = 40, 50, (0.05, 0.3)
    x0, y0, w, h = sample_erase_boxes(20000, (height, width), scale, CPU).unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= width).all() and (y0 + h <= height).all()
    area = w * h / (height * width)
    assert area.min() >= scale[0] * 0.8 and area.max() <= scale[1] * 1.1
    tall = h / w
    assert tall.min() >= 0.3 * 0.8 and tall.max() <= 3.3 * 1.2
    assert 0.45 < (tall > 1).float().mean().item() < 0.55  # taller or wider with even odds
