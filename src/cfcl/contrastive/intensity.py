"""Per-sample intensity ops on ``[B, 1, H, W]`` batches in [0, 1], each a few whole-batch tensor passes.

Every op takes one parameter per sample and follows the kornia or torchvision op its docstring
names. The neutral parameter (factor 1, std 0, an empty box) returns the sample unchanged, so a
sample whose op was not drawn needs no branch and the batch is never split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def gamma_gain(images: torch.Tensor, gamma: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """kornia ``RandomGamma``: ``clamp(gain * x ** gamma, 0, 1)``."""
    return images.clamp(0, 1).pow_(_per_sample(gamma, images)).mul_(_per_sample(gain, images)).clamp_(0, 1)


def scale_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """kornia ``RandomContrast``: ``clamp(factor * x, 0, 1)``."""
    return images.clamp(0, 1).mul_(_per_sample(factor, images)).clamp_(0, 1)


def brightness_contrast(
    images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, contrast_first: torch.Tensor
) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness, contrast)`` with a per-sample order.

    Brightness scales (``clamp(b * x)``); contrast blends with the image mean
    (``clamp(c * x + (1 - c) * mean)``). Both are ``clamp(a * x + offset)``, so each of the two
    steps is one pass with the per-sample ``a`` and offset of whichever op comes there.
    """
    b, c, first = _per_sample(brightness, images), _per_sample(contrast, images), contrast_first.view(-1, 1, 1, 1)
    zero = torch.zeros((), dtype=images.dtype, device=images.device)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = torch.addcmul(torch.where(first, (1 - c) * mean, zero), images, torch.where(first, c, b)).clamp_(0, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return torch.addcmul(torch.where(first, zero, (1 - c) * mean), out, torch.where(first, b, c)).clamp_(0, 1)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``[n, size]`` (odd ``size``), one per ``sigma``, as kornia's."""
    taps = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - size // 2
    kernels = torch.exp(-(taps**2) / (2 * sigma[:, None] ** 2))
    return kernels / kernels.sum(1, keepdim=True)


def _depthwise(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Convolve each image plane with its own kernel (``weights [B*C, kh, kw]``), no padding.

    The batch is folded into channels (``[1, B*C, H, W]``, one grouped convolution): on the CPU
    that is some 30x faster than a 1-channel convolution over a batch of 256.
    """
    n, channels, height, width = images.shape
    out = F.conv2d(images.reshape(1, n * channels, height, width), weights.unsqueeze(1), groups=n * channels)
    return out.view(n, channels, *out.shape[-2:])


def gaussian_blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """kornia ``gaussian_blur2d`` (separable, reflect border) with one kernel per sample (a delta kernel: unchanged)."""
    channels, size = images.shape[1], kernels.shape[1]
    weights = kernels.to(images.dtype).repeat_interleave(channels, dim=0)
    padded = F.pad(images, [size // 2] * 4, mode="reflect")
    return _depthwise(_depthwise(padded, weights.view(-1, size, 1)), weights.view(-1, 1, size))


def sharpen(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """kornia ``RandomSharpness`` (PIL's): blend the 3x3-smoothed image with the input by ``factor``.

    0 gives the smoothed image, 1 the input, above 1 sharpens; the one-pixel border stays the input's.
    """
    n, channels = images.shape[:2]
    images = images.clamp(0, 1)
    smoothing = torch.ones(3, 3, device=images.device, dtype=images.dtype)  # PIL's SMOOTH: 1s around a 5, / 13
    smoothing[1, 1] = 5
    smoothed = _depthwise(images, (smoothing / 13).expand(n * channels, 3, 3))
    out = images.clone()
    out[..., 1:-1, 1:-1] = torch.lerp(smoothed, images[..., 1:-1, 1:-1], _per_sample(factor, images))
    return out.clamp_(0, 1)


def add_noise(images: torch.Tensor, noise: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """kornia ``RandomGaussianNoise``: ``x + std * noise`` (standard normal ``noise``), not clamped."""
    return torch.addcmul(images, noise, _per_sample(std, images))


def erase(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """kornia ``RandomErasing`` with value 0: zero each sample's box ``(x0, y0, w, h)`` (a zero-size box erases
    nothing)."""
    height, width = images.shape[-2:]
    x0, y0, w, h = (_per_sample(v, images) for v in boxes.unbind(1))
    rows = torch.arange(height, device=images.device, dtype=images.dtype)[:, None]
    cols = torch.arange(width, device=images.device, dtype=images.dtype)
    inside = (rows >= y0) & (rows < y0 + h) & (cols >= x0) & (cols < x0 + w)
    return images.masked_fill(inside, 0.0)


def sample_erase_boxes(
    n: int,
    image_size: tuple[int, int],
    scale: tuple[float, float],
    device: torch.device,
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Boxes ``[n, 4]`` (x0, y0, w, h) drawn as kornia's ``RandomErasing``.

    Area fraction uniform in ``scale``; aspect ratio (height / width) uniform in ``[ratio[0], 1]``
    or ``[1, ratio[1]]`` with even odds; the corner uniform over the positions that fit.
    """
    height, width = image_size
    u = torch.rand(6, n, device=device)
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * (height * width)
    below = ratio[0] + (1 - ratio[0]) * u[1]
    above = 1 + (ratio[1] - 1) * u[2]
    aspect = (
        torch.where(u[3] < 0.5, below, above) if ratio[0] < 1 < ratio[1] else ratio[0] + (ratio[1] - ratio[0]) * u[1]
    )
    h = torch.sqrt(area * aspect).round().clamp(1, height)
    w = torch.sqrt(area / aspect).round().clamp(1, width)
    x0 = (u[4] * (width - w + 1)).floor()
    y0 = (u[5] * (height - h + 1)).floor()
    return torch.stack([x0, y0, w, h], dim=1)
