"""Tiny stores for the counterfactual classifier / quality tests, with exactly known counterfactuals.

Domain d renders a latent image u in [0.05, 0.95] as ``u ** GAMMAS[d]``: the scanner is read
from the intensity curve, and the true counterfactual of an image for domain d' is ``u ** GAMMAS[d']``.
Domains 0-2 are in-distribution (prevalence 5:2:1, "rare" = 2), domain 3 is held out (OOD).
With ``sex_shade`` the second sex is drawn too: the top half of its latent image is multiplied by
``sex_shade`` before the curve, and ``path/true_cf_sex`` holds every image under both sexes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cfcl.data.store import ImageStore, write_store

GAMMAS = (0.5, 1.0, 2.0, 3.0)
DOMAINS = ["major", "middle", "rare", "ood"]


def make_store(
    path, n_per_domain=(60, 24, 12), n_ood=6, size=16, seed=0, true_cf=True, sexes=None, sex_shade=None
) -> ImageStore:
    """The store at ``path``; with ``true_cf`` also ``path/true_cf`` (rows ``i * 4 + d``); ``sexes``: a
    ``sex`` column cycling through these values, independently of the label; ``sex_shade``: the two
    sexes drawn (with ``true_cf`` also ``path/true_cf_sex``, rows ``i * 2 + s``)."""
    rng = np.random.default_rng(seed)
    rows, latents = [], []
    for d, n in enumerate((*n_per_domain, n_ood)):
        for k in range(n):
            latents.append(rng.uniform(0.05, 0.95, (size, size)))
            split = ("ood_train" if k % 2 else "ood_test") if d == 3 else ("train", "train", "val", "test")[k % 4]
            rows.append(
                {
                    "image_id": f"i{len(rows)}",
                    "patient_id": f"p{len(rows)}",
                    "split": split,
                    "domain": d,
                    "label": k % 2,
                }
            )
    meta = pd.DataFrame(rows)
    meta.insert(0, "index", np.arange(len(meta)))
    if sexes:
        meta["sex"] = [sexes[(i // 4) % len(sexes)] for i in range(len(meta))]
    u = np.stack(latents)
    sex_codes = (
        np.zeros(len(meta), dtype=np.int64) if sex_shade is None else meta["sex"].map(list(sexes).index).to_numpy()
    )
    shades = np.ones((2, size, size))
    if sex_shade is not None:
        shades[1, : size // 2] = sex_shade
    domains, n = meta["domain"].to_numpy(), len(meta)

    def render(domain: np.ndarray, sex: np.ndarray) -> np.ndarray:
        """Every image under these domains and sexes (one of each per image)."""
        return np.round(255 * (u * shades[sex]) ** np.asarray(GAMMAS)[domain][:, None, None]).astype(np.uint8)

    images = render(domains, sex_codes)
    store = write_store(path, images, meta, DOMAINS, ["neg", "pos"], extra={"ood_domains": [3]})
    if true_cf:
        all_cf = np.stack([render(np.full(n, d), sex_codes) for d in range(len(DOMAINS))], axis=1).reshape(
            -1, size, size
        )
        cf_meta = pd.DataFrame(
            {
                "index": np.arange(n * len(DOMAINS)),
                "source_index": np.repeat(np.arange(n), len(DOMAINS)),
                "target_domain": np.tile(np.arange(len(DOMAINS)), n),
            }
        )
        cf_meta["split"] = np.repeat(meta["split"].to_numpy(), len(DOMAINS))
        cf_meta["domain"] = cf_meta["target_domain"]
        write_store(
            path / "true_cf",
            all_cf,
            cf_meta,
            DOMAINS,
            ["neg", "pos"],
            kind="counterfactuals",
            extra={"source_store": store.content_hash},
        )
    if true_cf and sex_shade is not None:
        by_sex = np.stack([render(domains, np.full(n, s)) for s in (0, 1)], axis=1)
        sex_meta = pd.DataFrame(
            {
                "index": np.arange(2 * n),
                "source_index": np.repeat(np.arange(n), 2),
                "target_sex": np.tile([0, 1], n),
                "split": np.repeat(meta["split"].to_numpy(), 2),
                "domain": np.repeat(domains, 2),
            }
        )
        write_store(
            path / "true_cf_sex",
            by_sex.reshape(-1, size, size),
            sex_meta,
            DOMAINS,
            ["neg", "pos"],
            kind="counterfactuals",
            extra={"source_store": store.content_hash, "intervened": {"sex": list(sexes)}},
        )
    return store


def gamma_cf(x: torch.Tensor, pa: dict, pa_star: dict) -> torch.Tensor:
    """The exact counterfactual map of these stores (up to the stores' uint8 rounding)."""
    gammas = torch.tensor(GAMMAS, device=x.device)
    power = (gammas[pa_star["domain"]] / gammas[pa["domain"]]).view(-1, 1, 1, 1)
    return x.clamp_min(1e-6) ** power
