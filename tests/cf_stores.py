"""Tiny stores for the counterfactual classifier / quality tests, with exactly known counterfactuals.

Domain d renders a latent image u in [0.05, 0.95] as ``u ** GAMMAS[d]``: the scanner is read
from the intensity curve, and the true counterfactual of an image for domain d' is ``u ** GAMMAS[d']``.
Domains 0-2 are in-distribution (prevalence 5:2:1, "rare" = 2), domain 3 is held out (OOD).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cfcl.data.store import ImageStore, write_store

GAMMAS = (0.5, 1.0, 2.0, 3.0)
DOMAINS = ["major", "middle", "rare", "ood"]


def make_store(path, n_per_domain=(60, 24, 12), n_ood=6, size=16, seed=0, true_cf=True, sexes=None) -> ImageStore:
    """The store at ``path``; with ``true_cf`` also ``path/true_cf`` (rows ``i * 4 + d``); ``sexes``: a
    ``sex`` column cycling through these values, independently of the label."""
    rng = np.random.default_rng(seed)
    rows, latents = [], []
    for d, n in enumerate((*n_per_domain, n_ood)):
        for k in range(n):
            latents.append(rng.uniform(0.05, 0.95, (size, size)))
            split = ("ood_train" if k % 2 else "ood_test") if d == 3 else ("train", "train", "val", "test")[k % 4]
            rows.append({"image_id": f"i{len(rows)}", "patient_id": f"p{len(rows)}", "split": split, "domain": d, "label": k % 2})
    meta = pd.DataFrame(rows)
    meta.insert(0, "index", np.arange(len(meta)))
    if sexes:
        meta["sex"] = [sexes[(i // 4) % len(sexes)] for i in range(len(meta))]
    u = np.stack(latents)
    render = lambda d: np.round(255 * u ** GAMMAS[d]).astype(np.uint8)  # noqa: E731
    images = np.stack([render(d)[i] for i, d in enumerate(meta["domain"])])
    store = write_store(path, images, meta, DOMAINS, ["neg", "pos"], extra={"ood_domains": [3]})
    if true_cf:
        all_cf = np.stack([render(d) for d in range(len(DOMAINS))], axis=1).reshape(-1, size, size)
        n = len(meta)
        cf_meta = pd.DataFrame({
            "index": np.arange(n * len(DOMAINS)),
            "source_index": np.repeat(np.arange(n), len(DOMAINS)),
            "target_domain": np.tile(np.arange(len(DOMAINS)), n),
        })
        cf_meta["split"] = np.repeat(meta["split"].to_numpy(), len(DOMAINS))
        cf_meta["domain"] = cf_meta["target_domain"]
        write_store(path / "true_cf", all_cf, cf_meta, DOMAINS, ["neg", "pos"], kind="counterfactuals",
                    extra={"source_store": store.content_hash})
    return store


def gamma_cf(x: torch.Tensor, pa: dict, pa_star: dict) -> torch.Tensor:
    """The exact counterfactual map of these stores (up to the stores' uint8 rounding)."""
    gammas = torch.tensor(GAMMAS, device=x.device)
    power = (gammas[pa_star["domain"]] / gammas[pa["domain"]]).view(-1, 1, 1, 1)
    return x.clamp_min(1e-6) ** power
