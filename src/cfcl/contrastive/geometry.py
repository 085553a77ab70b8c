"""Random resized crop, rotation and flips as one affine map per sample, resampled once.

Applied one after the other (crop and resize, rotate the resized crop about its centre with
zero fill, flip), the three ops interpolate the image two or three times. Here their maps are
composed per sample, the output grid is mapped straight into the input image and sampled once
(bilinear, ``align_corners=True`` as kornia's ops). The rotation's zero fill is kept: a sample
point that the rotation takes outside the crop is faded to zero over one pixel, as the bilinear
zero padding of a separate rotation would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_crop_boxes(
    n: int,
    image_size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
    tries: int = 10,
) -> torch.Tensor:
    """Boxes ``[n, 4]`` (x0, y0, width, height) in whole pixels, drawn as kornia's RandomResizedCrop.

    Per sample: up to ``tries`` draws of an area fraction uniform in ``scale`` and an aspect ratio
    log-uniform in ``ratio``; the first box that fits the image is kept (else the whole image, cut
    to the ratio range); its corner is uniform over the positions that fit.
    """
    height, width = image_size
    area = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, device=device)) * (height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, device=device))
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # the first box that fits (0 when none does)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    image_ratio = width / height
    fallback_w, fallback_h = float(width), float(height)
    if image_ratio < min(ratio):
        fallback_h = float(round(width / min(ratio)))
    elif image_ratio > max(ratio):
        fallback_w = float(round(height * max(ratio)))
    any_fits = fits.any(1)
    w = torch.where(any_fits, w, torch.full_like(w, fallback_w)).clamp(1, width)
    h = torch.where(any_fits, h, torch.full_like(h, fallback_h)).clamp(1, height)
    x0 = (torch.rand(n, device=device) * (width - w + 1)).floor()
    y0 = (torch.rand(n, device=device) * (height - h + 1)).floor()
    return torch.stack([x0, y0, w, h], dim=1)


def view_maps(
    boxes: torch.Tensor, angles: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor, out_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the maps from output pixel ``(x, y, 1)`` to the rotated crop's pixel, and from that to the input's.

    Returns ``rotation [n, 2, 3]`` (undo the flips, then the rotation by ``angles`` degrees about
    the crop's centre; positive angles turn the content counter-clockwise as kornia's ``rotate``)
    and ``crop [n, 2, 2]`` (per axis: scale, offset) taking the ``out_size`` crop grid to the box
    ``boxes`` (x0, y0, w, h) with corners aligned.
    """
    out_h, out_w = out_size
    cx, cy = (out_w - 1) / 2, (out_h - 1) / 2
    theta = torch.deg2rad(angles)
    cos, sin = torch.cos(theta), torch.sin(theta)
    fx = torch.where(hflip, -1.0, 1.0).to(cos)  # x -> out_w - 1 - x, about the centre: x - cx -> -(x - cx)
    fy = torch.where(vflip, -1.0, 1.0).to(cos)
    # p = c + R(-angle) F (q - c): the inverse of rotating the content by +angle about c, after flipping.
    a, b = cos * fx, -sin * fy
    c, d = sin * fx, cos * fy
    rotation = torch.stack(
        [
            torch.stack([a, b, cx - a * cx - b * cy], dim=1),
            torch.stack([c, d, cy - c * cx - d * cy], dim=1),
        ],
        dim=1,
    )
    x0, y0, w, h = boxes.unbind(1)
    crop = torch.stack(
        [
            torch.stack([(w - 1) / max(out_w - 1, 1), x0], dim=1),
            torch.stack([(h - 1) / max(out_h - 1, 1), y0], dim=1),
        ],
        dim=1,
    )
    return rotation, crop


def warp_views(
    images: torch.Tensor, rotation: torch.Tensor, crop: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Resample ``images [n, C, H, W]`` through :func:`view_maps`' maps in one bilinear pass: ``[n, C, *out_size]``.

    Each coordinate is built per axis by broadcasting (no ``[n, h, w, 3]`` grid product), so the
    grid costs a few contiguous elementwise passes next to the one ``grid_sample``.
    """
    n, _, height, width = images.shape
    out_h, out_w = out_size
    dtype, device = images.dtype, images.device
    rotation, crop = rotation.to(dtype), crop.to(dtype)
    xs = torch.arange(out_w, device=device, dtype=dtype)
    ys = torch.arange(out_h, device=device, dtype=dtype)[:, None]
    grid, inside = torch.empty(n, out_h, out_w, 2, device=device, dtype=dtype), None
    for axis, (in_extent, out_extent) in enumerate(((width, out_w), (height, out_h))):
        m = rotation[:, axis, :, None, None]
        u = (m[:, 0] * xs + m[:, 2]) + m[:, 1] * ys  # [n, out_h, out_w]: this axis' pixel in the rotated crop
        # A separate rotation's zero padding: the crop's edge value, faded to zero over the pixel beyond it.
        centre = (out_extent - 1) / 2
        fade = (u - centre).abs_().neg_().add_(centre + 1).clamp_(0, 1)
        inside = fade if inside is None else inside.mul_(fade)
        scale = crop[:, axis, 0, None, None] * (2 / max(in_extent - 1, 1))
        offset = crop[:, axis, 1, None, None] * (2 / max(in_extent - 1, 1)) - 1
        torch.addcmul(offset, u.clamp_(0, out_extent - 1), scale, out=grid[..., axis])
    sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.mul_(inside.unsqueeze(1))
