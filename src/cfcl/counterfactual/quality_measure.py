"""Counterfactual quality measured per (image, target domain): the judge's logits, composition,
reversibility and, with true counterfactuals, the error against them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cfcl.counterfactual.classifier import DomainClassifier
from cfcl.counterfactual.parents import intervene, parents_to
from cfcl.counterfactual.quality import Parents, composition_mae, error_vs_truth, reversibility_mae
from cfcl.counterfactual.quality_inputs import Generator, store_images
from cfcl.data.store import ImageStore
from cfcl.errors import StoreError


def select_images(store: ImageStore, splits: list[str], domains: list[int], n_per_domain: int, seed: int) -> np.ndarray:
    """Up to ``n_per_domain`` random images of each domain from ``splits`` (sorted store rows)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for d in domains:
        rows = store.indices(splits, [d])
        if len(rows) == 0:
            raise StoreError(
                f"image store {store.path} has no images of domain {store.domains[d]} in split(s) {', '.join(splits)}"
            )
        chosen.append(np.sort(rng.choice(rows, min(n_per_domain, len(rows)), replace=False)))
    return np.concatenate(chosen)


def _select(pa: Parents, mask: torch.Tensor) -> Parents:
    return {k: v[mask] for k, v in pa.items()}


@torch.no_grad()
def measure(
    generator: Generator,
    judge: DomainClassifier,
    store: ImageStore,
    rows: np.ndarray,
    domains: list[int],
    truth: ImageStore | None,
    null_steps: int,
    batch_size: int,
    device: torch.device,
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor | None]:
    """Per (image, target) records, the judge's logits on every x* (same order), composition ``[steps, N]``."""
    truth_table = truth.counterfactual_table(len(store), len(store.domains)) if truth is not None else None
    records, logits, composition = [], [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        x = store_images(store, batch, device)
        pa = parents_to(generator.parents(batch), device)
        source = pa["domain"]
        if generator.cycles:
            composition.append(composition_mae(generator.cf_fn, x, pa, null_steps).cpu())
        for t in domains:
            mask = source != t
            if not mask.any():
                continue
            xs, pas = x[mask], _select(pa, mask)
            pa_star = intervene(pas, domain=t)
            x_star = generator.cf_fn(xs, pas, pa_star)
            logits.append(judge(x_star).cpu())
            record = {
                "row": batch[mask.cpu().numpy()],
                "source": pas["domain"].cpu().numpy(),
                "target": t,
            }
            if generator.cycles:
                record["reversibility"] = reversibility_mae(generator.cf_fn, xs, pas, pa_star).cpu().numpy()
            if truth_table is not None:
                true_rows = truth_table[record["row"], t]
                if (true_rows < 0).any():
                    raise StoreError(f"true counterfactual store {truth.path} lacks images for target {store.domains[t]}")
                errors = error_vs_truth(xs, x_star, store_images(truth, true_rows, device))
                record["mae_cf"], record["mae_identity"] = errors["cf"].cpu().numpy(), errors["identity"].cpu().numpy()
            records.append(pd.DataFrame(record))
    table = pd.concat(records, ignore_index=True)
    return table, torch.cat(logits), torch.cat(composition, dim=1) if composition else None
