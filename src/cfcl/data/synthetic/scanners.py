"""Scanner catalogue and the acquisition mechanism: physical image + exogenous noise -> radiograph.

Every mechanism is a pure, vectorised function of the physical attenuation image ``phys``
(``[N, H, W]``, float, about [0, 1]) and the exogenous standard-normal noise ``u`` of the same
shape. ``u`` is sampled once per image and reused for every scanner, so the image of the same
patient under another scanner (the true counterfactual) is exact.

The chain: detector blur and pitch, edge enhancement, the signal's gain field (heel effect,
grid lines), response curve, quantum noise, the detector's own flaws (flat-field gain, dust
specks), then the vendor's post-processing of the detected image (multi-scale local contrast,
display curve), collimation and marker. Post-processing comes after the noise and is invertible,
so it changes how a lesion looks without destroying information about it; blur, pitch, noise and
dust do destroy some.
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
    # The levers below are off by default (the catalogue's scanners leave them off).
    heel: float = 0.0  # heel effect: beam intensity 1 + heel * t before the noise, t in [-1, 1] along heel_angle
    heel_angle: float = 0.0  # direction in which the gain grows, degrees (0: towards the image's right, 90: down)
    flat_field: float = 0.0  # uncorrected detector gain 1 + flat_field * t after the noise (keeps the SNR)
    flat_field_angle: float = 0.0  # as heel_angle
    dust: float = 0.0  # bright specks on the detector (dust, dead-pixel clusters) of this peak height, after the noise
    dust_size: float = 1.0  # a speck's scale (Gaussian sigma)
    dust_level: float = 3.0  # specks lie where a smoothed field of the exogenous noise exceeds this many SDs
    grid_depth: float = 0.0  # anti-scatter grid: fraction of the signal a grid line removes at its centre
    grid_period: float = 3.0  # distance between grid lines
    grid_angle: float = 0.0  # direction across the lines, degrees (0: vertical lines)
    local_contrast: tuple[float, ...] = ()  # post-processing: amount of detail added back at each scale (> -1)
    local_contrast_sigma: tuple[float, ...] = ()  # the scales (Gaussian sigma), one per amount
    display_log: float = 0.0  # display curve log(1 + k x) / log(1 + k) of strength k (0: linear)
    display_inverted: bool = False  # display dark for dense (MONOCHROME1-like), after the curve

    def __post_init__(self) -> None:
        if len(self.local_contrast) != len(self.local_contrast_sigma):
            raise ValueError("local_contrast and local_contrast_sigma need one value each per scale")
        if any(a <= -1.0 for a in self.local_contrast) or any(s <= 0 for s in self.local_contrast_sigma):
            raise ValueError(
                "local_contrast amounts must be > -1 and local_contrast_sigma > 0 (else it cannot be undone)"
            )
        if (
            not 0.0 <= self.grid_depth < 1.0
            or self.grid_period <= 0
            or max(abs(self.heel), abs(self.flat_field)) >= 1.0
            or self.dust < 0
            or self.dust_size <= 0
        ):
            raise ValueError(
                "grid_depth must lie in [0, 1), grid_period > 0, heel and flat_field in (-1, 1), dust >= 0 and "
                "dust_size > 0"
            )
        if self.display_log < 0:
            raise ValueError("display_log must be >= 0")


SCANNERS: dict[str, Scanner] = {
    s.name: s
    for s in (
        Scanner(
            "flatpanel",
            "modern flat-panel DR: sharp, low noise, mild edge enhancement, linear response",
            psf_sigma=0.5,
            downsample=1,
            sharpen_amount=0.6,
            sharpen_sigma=1.5,
            gamma=1.0,
            gain=1.0,
            offset=0.0,
            noise_std=0.025,
            noise_sigma=0.0,
            border=(0.03, 0.03, 0.03, 0.03),
            border_value=0.0,
            marker="F",
            marker_at=(0.05, 0.84),
        ),
        Scanner(
            "cr_plate",
            "computed radiography plate: soft (phosphor blur), log-like response, correlated noise",
            psf_sigma=1.2,
            downsample=1,
            sharpen_amount=0.0,
            sharpen_sigma=1.0,
            gamma=0.7,
            gain=0.92,
            offset=0.06,
            noise_std=0.04,
            noise_sigma=0.7,
            border=(0.06, 0.0, 0.05, 0.05),
            border_value=0.85,
            marker="C",
            marker_at=(0.08, 0.06),
        ),
        Scanner(
            "portable",
            "bedside portable unit: coarse detector, high noise, contrast-stretched, tight collimation",
            psf_sigma=0.8,
            downsample=2,
            sharpen_amount=0.4,
            sharpen_sigma=2.0,
            gamma=1.5,
            gain=1.05,
            offset=-0.02,
            noise_std=0.07,
            noise_sigma=0.0,
            border=(0.09, 0.06, 0.09, 0.09),
            border_value=0.15,
            marker="P",
            marker_at=(0.82, 0.08),
        ),
        Scanner(
            "legacy",
            "older DR from another site: blurred, washed out, strong large-radius edge enhancement",
            psf_sigma=1.4,
            downsample=2,
            sharpen_amount=1.6,
            sharpen_sigma=3.5,
            gamma=0.6,
            gain=0.78,
            offset=0.14,
            noise_std=0.05,
            noise_sigma=1.0,
            border=(0.0, 0.08, 0.0, 0.0),
            border_value=1.0,
            marker="R",
            marker_at=(0.82, 0.84),
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


def local_contrast(x: np.ndarray, amounts: tuple[float, ...], sigmas: tuple[float, ...]) -> np.ndarray:
    """Multi-scale local-contrast processing: ``x + sum_k amounts[k] * (x - blur(x, sigmas[k]))``.

    One scale is an unsharp mask; several, a vendor's multi-scale processing. Its frequency
    response is ``1 + sum_k a_k (1 - G_k)``, above 0 wherever every ``a_k > -1``, so it can be undone."""
    out = x
    for amount, sigma in zip(amounts, sigmas, strict=True):
        out = out + amount * (x - blur(x, sigma))
    return out


def direction(h: int, w: int, angle: float, pixels: bool = False) -> np.ndarray:
    """Each pixel's signed distance ``[H, W]`` from the image centre along ``angle`` degrees (0: left to right,
    90: top to bottom): in pixels, or (``pixels`` False) in half-fields, -1 .. 1 along either axis."""
    ys = np.arange(h, dtype=np.float32) + 0.5 - h / 2.0
    xs = np.arange(w, dtype=np.float32) + 0.5 - w / 2.0
    if not pixels:
        ys, xs = ys / (h / 2.0), xs / (w / 2.0)
    rad = np.deg2rad(angle)
    return (np.cos(rad) * xs[None, :] + np.sin(rad) * ys[:, None]).astype(np.float32)


def heel_gradient(h: int, w: int, strength: float, angle: float) -> np.ndarray:
    """The heel effect's (or a detector's) smooth signal gain ``[H, W]``: ``1 + strength * t``, ``t`` in half-fields."""
    return 1.0 + strength * direction(h, w, angle)


def grid_lines(h: int, w: int, depth: float, period: float, angle: float) -> np.ndarray:
    """An anti-scatter grid's shadow ``[H, W]``: ``1 - depth * (1 + cos(2 pi s / period)) / 2``, ``s`` in pixels
    from the centre across the lines, so a line's centre keeps ``1 - depth`` of the signal and the gap between keeps
    all."""
    return 1.0 - depth * 0.5 * (1.0 + np.cos(2.0 * np.pi * direction(h, w, angle, pixels=True) / period))


def dust_specks(u: np.ndarray, size: float, level: float) -> np.ndarray:
    """Specks ``[N, H, W]`` in [0, 1] where ``u``, mirrored and smoothed at ``size`` px to unit variance, exceeds
    ``level`` (full height half an SD above it): blob-like, at random places fixed by the image's exogenous noise,
    so every scanner puts them in the same places and the true counterfactual stays exact. The mirror keeps a
    speck from sitting on the noise it is drawn from."""
    field = unit_noise(np.ascontiguousarray(u[:, ::-1, ::-1]), size)
    return np.clip(2.0 * (field - level), 0.0, 1.0)


def display_curve(x: np.ndarray, log_strength: float, inverted: bool) -> np.ndarray:
    """The display's look-up: ``log(1 + k x) / log(1 + k)`` on ``x`` clipped to [0, 1] (``k = 0``: linear),
    then ``1 - y`` if ``inverted``. Monotone, so it keeps every grey-level order."""
    y = np.clip(x, 0.0, 1.0)
    if log_strength > 0:
        y = np.log1p(log_strength * y) / np.log1p(log_strength)
    return 1.0 - y if inverted else y


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
        x = local_contrast(x, (scanner.sharpen_amount,), (scanner.sharpen_sigma * px,))
    if scanner.heel:
        x = x * heel_gradient(h, w, scanner.heel, scanner.heel_angle)
    if scanner.grid_depth:
        x = x * grid_lines(h, w, scanner.grid_depth, scanner.grid_period * px, scanner.grid_angle)
    x = scanner.offset + scanner.gain * np.clip(x, 0.0, 1.0) ** scanner.gamma
    noise = unit_noise(u, scanner.noise_sigma * px)
    x = x + scanner.noise_std * np.sqrt(np.clip(x, 0.05, 1.0)) * noise
    if scanner.flat_field:
        x = x * heel_gradient(h, w, scanner.flat_field, scanner.flat_field_angle)
    if scanner.dust:
        x = x + scanner.dust * dust_specks(u, scanner.dust_size * px, scanner.dust_level)
    if scanner.local_contrast:
        x = local_contrast(x, scanner.local_contrast, tuple(s * px for s in scanner.local_contrast_sigma))
    if scanner.display_log or scanner.display_inverted:
        x = display_curve(x, scanner.display_log, scanner.display_inverted)
    if frame:
        outside, marker = frame_masks(scanner, h, w)
        x[:, outside] = scanner.border_value
        x[:, marker] = 1.0
    return np.clip(x, 0.0, 1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
