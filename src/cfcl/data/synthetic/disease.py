"""Age (and optionally the scanner) -> disease -> lesions inside the lung fields."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cfcl.data.synthetic.scanners import blur


def disease_probability(
    age: np.ndarray, domain: np.ndarray, n_domains: int, cfg, shortcut: np.ndarray | float = 0.0
) -> np.ndarray:
    """P(opacity | age, scanner): logistic in age; the scanner term is the optional confounder, and
    ``shortcut`` adds log-odds per image (:func:`acquisition_log_odds`)."""
    logit = np.log(cfg.prevalence / (1.0 - cfg.prevalence)) + cfg.age_log_odds_per_decade * (age - 55.0) / 10.0
    if n_domains > 1:
        logit = logit + cfg.scanner_confounding * (domain / (n_domains - 1) * 2.0 - 1.0)
    return 1.0 / (1.0 + np.exp(-(logit + shortcut)))


def acquisition_log_odds(split: np.ndarray, domain: np.ndarray, scanners: list[str], cfg) -> np.ndarray:
    """Extra log-odds of disease of each image: ``cfg.acquisition_confounding[scanner]`` for a ``train``
    image acquired by that scanner (bedside imaging of ICU patients, who are more often ill), 0 for every
    other image, so the validation and test splits stay unconfounded and a scanner shortcut learned in
    training does not pay there."""
    per_domain = np.array([cfg.acquisition_confounding.get(s, 0.0) for s in scanners], dtype=float)
    return np.where(np.asarray(split) == "train", per_domain[np.asarray(domain)], 0.0)


def sample_lesions(rng: np.random.Generator, label: np.ndarray, cfg) -> pd.DataFrame:
    """Patches of opacity for every diseased image: where (in lung-relative coordinates), how big, how dense.

    A diseased image has 1..max_patches patches; each patch has a side (-1 patient right, +1 left),
    a position inside that lung (u across, v down, in [-1, 1]), a size and an elongation.
    Absent patches have zero contrast.
    """
    n, k = len(label), cfg.max_patches
    count = np.where(label == 1, rng.integers(1, k + 1, n), 0)
    present = np.arange(k)[None, :] < count[:, None]
    contrast = rng.uniform(cfg.contrast_min, cfg.contrast_max, n)
    table = {"lesion_contrast": np.where(label == 1, contrast, 0.0), "lesion_patches": count}
    side = rng.choice([-1.0, 1.0], n)
    for j in range(k):
        same_side = rng.random(n) < 0.6
        table[f"les{j}_side"] = np.where(same_side, side, -side)
        table[f"les{j}_u"] = rng.uniform(-0.6, 0.6, n)
        table[f"les{j}_v"] = rng.uniform(-0.7, 0.55, n)
        table[f"les{j}_size"] = rng.uniform(cfg.size_min, cfg.size_max, n)
        table[f"les{j}_aspect"] = rng.uniform(0.6, 1.6, n)
        table[f"les{j}_weight"] = np.where(present[:, j], rng.uniform(0.6, 1.0, n), 0.0)
    return pd.DataFrame(table)


def render_lesions(
    p: pd.DataFrame | dict,
    coords: tuple[np.ndarray, np.ndarray],
    lungs: np.ndarray,
    mottle: np.ndarray,
    max_patches: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Added attenuation ``[N, H, W]`` of the opacities, and their binary mask.

    Each patch is a soft elliptical blob; together they are modulated by a mottled texture
    (smoothed noise ``mottle``) and confined to the lung fields.
    """
    col = lambda name: np.asarray(p[name], dtype=np.float32)[:, None, None]  # noqa: E731
    x, y = coords
    size = lungs.shape[-1]
    lung_w, lung_h, lung_cx = col("lung_w"), col("lung_h"), col("lung_cx")
    lung_cy = col("lung_top") + lung_h
    density = np.zeros_like(lungs)
    for j in range(max_patches):
        cx = col(f"les{j}_side") * (lung_cx + col(f"les{j}_u") * lung_w)
        cy = lung_cy + col(f"les{j}_v") * lung_h
        s, aspect = col(f"les{j}_size"), col(f"les{j}_aspect")
        r2 = ((x - cx) / (s * aspect)) ** 2 + ((y - cy) / (s / aspect)) ** 2
        density = np.maximum(density, col(f"les{j}_weight") * np.exp(-0.5 * r2))
    texture = blur(mottle, 1.0 * size / 64.0) * (size / 64.0) * 3.5
    density = density * np.clip(0.7 + 0.45 * texture, 0.0, 1.4) * lungs
    lesion = col("lesion_contrast") * density
    return lesion.astype(np.float32), density > 0.25
