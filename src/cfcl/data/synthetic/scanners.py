"""Scanner catalogue and the acquisition mechanism: physical image + exogenous noise -> radiograph.

Every mechanism is a pure, vectorised function of the physical attenuation image ``phys``
(``[N, H, W]``, float, about [0, 1]) and the exogenous standard-normal noise ``u`` of the same
shape. ``u`` is sampled once per image and reused for every scanner, so the image of the same
patient under another scanner (the true counterfactual) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

# 5 x 5 glyphs burned into the image by each scanner's software.
GLYPHS = {
    "F": ["11111", "10000", "11110", "10000", "10000"],
    "C": ["01111", "10000", "10000", "10000", "01111"],
    "P": ["11110", "10001", "11110", "10000", "10000"],
    "L": ["10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "11110", "10100", "10011"],
}


@dataclass(frozen=True)
class Scanner:
    """An acquisition fingerprint. Lengths are in pixels of a 64-px image and scale with the size."""

    name: str
    description: str
    psf_sigma: float  # detector point-spread function (Gaussian blur)
    downsample: int  # detector pixel pitch: block-averaged by this factor, then interpolated back
    sharpen_amount: float  # unsharp-mask edge enhancement of the vendor's post-processing
    sharpen_sigma: float
    gamma: float  # response curve: offset + gain * x ** gamma
    gain: float
    offset: float
    noise_std: float  # quantum noise, scaled by sqrt of the signal
    noise_sigma: float  # spatial correlation of the noise (0: white)
    border: tuple[float, float, float, float]  # collimation: top, bottom, left, right (fraction of size)
    border_value: float
    marker: str  # burned-in glyph
    marker_at: tuple[float, float]  # its top-left corner (fraction of height, width)


SCANNERS: dict[str, Scanner] = {
    s.name: s
    for s in (
        Scanner(
            "flatpanel", "modern flat-panel DR: sharp, low noise, mild edge enhancement, linear response",
            psf_sigma=0.5, downsample=1, sharpen_amount=0.6, sharpen_sigma=1.5, gamma=1.0, gain=1.0,
            offset=0.0, noise_std=0.025, noise_sigma=0.0, border=(0.03, 0.03, 0.03, 0.03), border_value=0.0,
            marker="F", marker_at=(0.05, 0.84),
        ),
        Scanner(
            "cr_plate", "computed radiography plate: soft (phosphor blur), log-like response, correlated noise",
            psf_sigma=1.2, downsample=1, sharpen_amount=0.0, sharpen_sigma=1.0, gamma=0.7, gain=0.92,
            offset=0.06, noise_std=0.04, noise_sigma=0.7, border=(0.06, 0.0, 0.05, 0.05), border_value=0.85,
            marker="C", marker_at=(0.08, 0.06),
        ),
        Scanner(
            "portable", "bedside portable unit: coarse detector, high noise, contrast-stretched, tight collimation",
            psf_sigma=0.8, downsample=2, sharpen_amount=0.4, sharpen_sigma=2.0, gamma=1.5, gain=1.05,
            offset=-0.02, noise_std=0.07, noise_sigma=0.0, border=(0.09, 0.06, 0.09, 0.09), border_value=0.15,
            marker="P", marker_at=(0.82, 0.08),
        ),
        Scanner(
            "legacy", "older DR from another site: blurred, washed out, strong large-radius edge enhancement",
            psf_sigma=1.4, downsample=2, sharpen_amount=1.6, sharpen_sigma=3.5, gamma=0.6, gain=0.78,
            offset=0.14, noise_std=0.05, noise_sigma=1.0, border=(0.0, 0.08, 0.0, 0.0), border_value=1.0,
            marker="R", marker_at=(0.82, 0.84),
        ),
    )
}


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every image in a ``[N, H, W]`` batch (no blur for sigma <= 0)."""
    return gaussian_filter(x, sigma=(0.0, sigma, sigma), mode="reflect", truncate=3.0) if sigma > 0 else x


def change_resolution(x: np.ndarray, factor: int) -> np.ndarray:
    """Block-average to a coarser detector grid and interpolate back to the display grid."""
    if factor <= 1:
        return x
    n, h, w = x.shape
    hc, wc = h // factor * factor, w // factor * factor
    coarse = x[:, :hc, :wc].reshape(n, hc // factor, factor, wc // factor, factor).mean(axis=(2, 4))
    up = np.repeat(np.repeat(coarse, factor, axis=1), factor, axis=2)
    up = np.pad(up, ((0, 0), (0, h - hc), (0, w - wc)), mode="edge")
    return blur(up, factor / 2.5)


def unit_noise(u: np.ndarray, sigma: float) -> np.ndarray:
    """``u`` spatially correlated by a Gaussian of ``sigma`` px, rescaled to unit variance."""
    if sigma <= 0:
        return u
    # Variance of white noise after a unit-sum Gaussian is 1 / (4 pi sigma^2) in 2-D.
    return blur(u, sigma) * np.sqrt(4.0 * np.pi * sigma**2)


def glyph_mask(letter: str, size: int) -> np.ndarray:
    scale = max(1, size // 64)
    glyph = np.array([[c == "1" for c in row] for row in GLYPHS[letter]], dtype=bool)
    return np.kron(glyph, np.ones((scale, scale), dtype=bool))


def frame_masks(scanner: Scanner, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels outside the collimated field, and pixels of the burned-in marker."""
    top, bottom, left, right = (round(f * n) for f, n in zip(scanner.border, (h, h, w, w)))
    outside = np.ones((h, w), dtype=bool)
    outside[top : h - bottom, left : w - right] = False
    marker = np.zeros((h, w), dtype=bool)
    glyph = glyph_mask(scanner.marker, h)
    r = min(round(scanner.marker_at[0] * h), h - glyph.shape[0])
    c = min(round(scanner.marker_at[1] * w), w - glyph.shape[1])
    marker[r : r + glyph.shape[0], c : c + glyph.shape[1]] = glyph
    return outside, marker


def acquire(phys: np.ndarray, u: np.ndarray, scanner: Scanner, frame: bool = True) -> np.ndarray:
    """The radiograph (float in [0, 1]) a scanner makes of physical images ``phys`` with noise ``u``.

    ``frame``: burn in the collimation border and the marker (off: the scanner shows only in
    how it renders the anatomy).
    """
    h, w = phys.shape[1:]
    px = h / 64.0
    x = blur(phys.astype(np.float32, copy=False), scanner.psf_sigma * px)
    x = change_resolution(x, scanner.downsample)
    if scanner.sharpen_amount:
        x = x + scanner.sharpen_amount * (x - blur(x, scanner.sharpen_sigma * px))
    x = scanner.offset + scanner.gain * np.clip(x, 0.0, 1.0) ** scanner.gamma
    noise = unit_noise(u, scanner.noise_sigma * px)
    x = x + scanner.noise_std * np.sqrt(np.clip(x, 0.05, 1.0)) * noise
    if frame:
        outside, marker = frame_masks(scanner, h, w)
        x[:, outside] = scanner.border_value
        x[:, marker] = 1.0
    return np.clip(x, 0.0, 1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
