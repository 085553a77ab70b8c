"""Patient attributes -> anatomy -> physical attenuation image.

Geometry lives in normalised coordinates (x, y in [-1, 1], y pointing down, the patient's
right on the image's left), so every size renders the same patient. All functions are
vectorised over a batch of images: parameters are arrays of length N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cfcl.data.synthetic.scanners import blur

# The per-patient traits :func:`patient_anatomy` computes, in its column order.
ANATOMY_TRAITS = (
    "body_w",
    "habitus",
    "lung_w",
    "lung_h",
    "lung_cx",
    "lung_top",
    "lung_depth",
    "dome_h",
    "heart_w",
    "heart_h",
    "rib_spacing",
    "rib_tilt",
    "rib_phase",
    "bone_density",
    "vessel_amp",
    "breast",
)
# A patient's exogenous noise: one standard normal per trait (rib_phase: uniform in [0, 1)).
NOISE_COLUMNS = tuple(f"noise_{t}" for t in ANATOMY_TRAITS)


def sample_patient_noise(rng: np.random.Generator, breast_rng: np.random.Generator, n: int) -> pd.DataFrame:
    """The exogenous noise of ``n`` patients' anatomy; ``breast`` comes from its own stream, so the
    other traits draw what they drew before it existed."""
    noise = {
        f"noise_{t}": rng.uniform(0.0, 1.0, n) if t == "rib_phase" else rng.standard_normal(n)
        for t in ANATOMY_TRAITS[:-1]
    }
    return pd.DataFrame({**noise, "noise_breast": breast_rng.standard_normal(n)})


def patient_anatomy(sex: np.ndarray, age: np.ndarray, noise: pd.DataFrame, breast_shadow: float) -> pd.DataFrame:
    """Anatomy of each patient, a mechanism of sex (1 = male), age (years) and the patient's noise.

    ``breast``: the attenuation breast tissue adds over the lower lung fields at its densest
    (``breast_shadow`` times a patient's density; 0 for men). Applied to the same noise with
    the other sex, it gives the patient's true sex counterfactual."""
    male, decades = np.asarray(sex, dtype=float), (np.asarray(age, dtype=float) - 55.0) / 10.0
    z = {t: noise[f"noise_{t}"].to_numpy() for t in ANATOMY_TRAITS}
    return pd.DataFrame(
        {
            "body_w": 0.80 + 0.06 * male + 0.04 * z["body_w"],
            "habitus": np.clip(0.46 + 0.02 * male + 0.06 * z["habitus"], 0.32, 0.62),
            "lung_w": 0.26 + 0.02 * male + 0.015 * z["lung_w"],
            "lung_h": 0.50 + 0.03 * male - 0.012 * decades + 0.025 * z["lung_h"],
            "lung_cx": 0.36 + 0.015 * z["lung_cx"],
            "lung_top": -0.62 + 0.03 * z["lung_top"],
            "lung_depth": np.clip(0.30 + 0.04 * z["lung_depth"], 0.18, 0.42),
            "dome_h": np.clip(0.08 + 0.02 * z["dome_h"], 0.03, 0.14),
            "heart_w": 0.23 + 0.015 * male + 0.012 * decades + 0.02 * z["heart_w"],
            "heart_h": 0.19 + 0.015 * z["heart_h"],
            "rib_spacing": 0.15 + 0.008 * z["rib_spacing"],
            "rib_tilt": 0.32 + 0.04 * z["rib_tilt"],
            "rib_phase": z["rib_phase"],
            "bone_density": np.clip(0.13 - 0.015 * decades + 0.02 * z["bone_density"], 0.04, 0.22),
            "vessel_amp": np.clip(0.05 + 0.012 * z["vessel_amp"], 0.02, 0.08),
            "breast": (1.0 - male) * breast_shadow * np.clip(1.0 + 0.3 * z["breast"], 0.3, 1.7),
        }
    )


def sample_pose(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Per-exam variation: positioning (rotation in rad, shift, magnification) and technique.

    Technique (tube voltage and current) changes the overall density and contrast of the
    exam independently of the scanner: ``exposure_gain`` and ``exposure_gamma``.
    """
    return pd.DataFrame(
        {
            "pose_angle": 0.04 * rng.standard_normal(n),
            "pose_dx": 0.03 * rng.standard_normal(n),
            "pose_dy": 0.03 * rng.standard_normal(n),
            "pose_scale": 1.0 + 0.03 * rng.standard_normal(n),
            "exposure_gain": rng.uniform(0.8, 1.2, n),
            "exposure_gamma": np.exp(0.2 * rng.standard_normal(n)),
        }
    )


def apply_exposure(p: pd.DataFrame | dict, atten: np.ndarray) -> np.ndarray:
    """The exam's technique applied to the attenuation image (lesions included)."""
    return np.clip(_col(p, "exposure_gain") * atten ** _col(p, "exposure_gamma"), 0.0, 1.0)


def _col(p: pd.DataFrame | dict, name: str) -> np.ndarray:
    return np.asarray(p[name], dtype=np.float32)[:, None, None]


def body_coordinates(p: pd.DataFrame | dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-frame coordinates of every pixel ``[N, H, W]`` after the image's pose."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gx, gy = grid[None, None, :], grid[None, :, None]
    angle, scale = _col(p, "pose_angle"), _col(p, "pose_scale")
    dx, dy = gx - _col(p, "pose_dx"), gy - _col(p, "pose_dy")
    cos, sin = np.cos(angle), np.sin(angle)
    return (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale


def soft_inside(level: np.ndarray, edge: float) -> np.ndarray:
    """Smooth indicator of ``level < 1`` with a transition about ``edge`` wide (anti-aliasing)."""
    return 1.0 / (1.0 + np.exp(np.clip((level - 1.0) / edge, -30.0, 30.0)))


def superellipse(x, y, cx, cy, a, b, power: float = 2.0) -> np.ndarray:
    return (np.abs((x - cx) / a) ** power + np.abs((y - cy) / b) ** power) ** (1.0 / power)


def breast_profile(p: pd.DataFrame | dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where breast tissue lies over the lungs, 0..1: a soft mound over each lower lung field,
    fading upwards and ending at the inframammary fold."""
    lung_w, lung_h, lung_cx, lung_top = (_col(p, k) for k in ("lung_w", "lung_h", "lung_cx", "lung_top"))
    fold = lung_top + 1.75 * lung_h
    across = np.exp(-(((np.abs(x) - lung_cx - 0.04) / (1.1 * lung_w)) ** 2))
    height = np.exp(-(((y - fold) / (0.55 * lung_h)) ** 2)) * soft_inside(1.0 + (y - fold) / 0.04, 0.5)
    return (across * height).astype(np.float32)


def render_anatomy(
    p: pd.DataFrame | dict, size: int, texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple, np.ndarray]:
    """Attenuation image ``[N, H, W]`` (about [0, 1]), the lung mask, the body coordinates and the
    breast-tissue density (``breast`` times :func:`breast_profile`).

    ``texture`` is white noise ``[N, H, W]`` that becomes the lungs' vascular markings.
    """
    x, y = body_coordinates(p, size)
    edge = 2.0 / size  # one pixel
    ax = np.abs(x)
    body = soft_inside(superellipse(x, y, 0.0, 0.2, _col(p, "body_w"), 1.2, 2.4), 1.5 * edge / 0.8)

    lung_w, lung_h, lung_cx, lung_top = (_col(p, k) for k in ("lung_w", "lung_h", "lung_cx", "lung_top"))
    lung_cy = lung_top + lung_h
    lung_bottom = lung_top + 2.0 * lung_h
    lungs = soft_inside(superellipse(ax, y, lung_cx, lung_cy, lung_w, lung_h, 2.6), edge / 0.3)
    dome = lung_bottom - 0.1 - _col(p, "dome_h") * (1.0 - ((ax - lung_cx) / lung_w) ** 2)
    right_higher = np.where(x < 0, -0.04, 0.0).astype(np.float32)
    lungs = lungs * soft_inside(1.0 + (y - dome - right_higher) / 0.08, edge / 0.08)

    heart_w, heart_h = _col(p, "heart_w"), _col(p, "heart_h")
    heart = soft_inside(superellipse(x, y, 0.07, lung_bottom - 0.1 - heart_h * 0.8, heart_w, heart_h), edge / 0.2)
    mediastinum = soft_inside(superellipse(x, y, 0.0, lung_cy - 0.1, 0.12, lung_h * 1.1, 4.0), edge / 0.12)

    vessels = blur(texture, 1.2 * size / 64.0) * (size / 64.0) * 3.5
    hilum = np.exp(-(((ax - 0.2) / 0.12) ** 2 + ((y - lung_cy + 0.1) / 0.2) ** 2))
    markings = _col(p, "vessel_amp") * (0.6 * vessels + 1.2 * hilum) * lungs

    rib_t = (y - lung_top + 0.06 - _col(p, "rib_tilt") * ax * (1.0 - 0.6 * ax)) / _col(p, "rib_spacing")
    rib_t = rib_t + _col(p, "rib_phase") * 0.3
    frac = rib_t - np.floor(rib_t) - 0.5
    in_cage = soft_inside(superellipse(ax, y, lung_cx, lung_cy, lung_w * 1.15, lung_h * 1.08, 3.0), edge / 0.3)
    ribs = np.exp(-((frac / 0.16) ** 2)) * in_cage * soft_inside(1.0 + (0.06 - ax) / 0.05, edge / 0.05)
    clav_y = lung_top + 0.02 - 0.14 * (ax - 0.08)
    clavicles = np.exp(-(((y - clav_y) / 0.035) ** 2)) * (ax > 0.08) * (ax < 0.62)
    spine = (ax < 0.07) * (0.6 + 0.4 * np.cos(2.0 * np.pi * y / 0.13)) * soft_inside(1.0 + (y - 0.95) / 0.1, edge)
    bones = _col(p, "bone_density") * np.clip(ribs + 1.3 * clavicles + 0.8 * spine, 0.0, 1.6)

    atten = _col(p, "habitus") * body + 0.14 * mediastinum * body
    atten = atten - _col(p, "lung_depth") * lungs * (1.0 - 0.85 * heart) + 0.2 * heart * body
    breast = _col(p, "breast") * breast_profile(p, x, y) * body
    atten = atten + markings + bones * body + breast
    return np.clip(atten, 0.0, 1.0).astype(np.float32), lungs.astype(np.float32), (x, y), breast
