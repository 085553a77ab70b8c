"""Counterfactual quality measured per (image, target cell): the judges' logits, composition,
reversibility and, with true counterfactuals, the error against them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cfcl.counterfactual.classifier.model import ParentClassifier
from cfcl.counterfactual.parents import intervene, parents_to
from cfcl.counterfactual.quality.inputs import Generator, Intervention, store_images
from cfcl.counterfactual.quality.metrics import Parents, composition_mae, error_vs_truth, reversibility_mae
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
    judges: dict[str, ParentClassifier],
    store: ImageStore,
    rows: np.ndarray,
    intervention: Intervention,
    truth: ImageStore | None,
    null_steps: int,
    batch_size: int,
    device: torch.device,
) -> tuple[pd.DataFrame, dict[str, torch.Tensor], torch.Tensor | None]:
    """Per (image, target cell) records, each parent's judge's logits on every x* (same order), composition
    ``[steps, N]``.

    A record holds the source and target cells and the target code of each intervened parent
    (``target_<parent>``); ``rows`` are images whose own cell is known."""
    truth_table = truth.counterfactual_table(len(store), len(store.domains)) if truth is not None else None
    own = intervention.own_cells(store, rows)
    records, composition = [], []
    logits: dict[str, list[torch.Tensor]] = {p: [] for p in judges}
    for start in range(0, len(rows), batch_size):
        batch, source = rows[start : start + batch_size], own[start : start + batch_size]
        x = store_images(store, batch, device)
        pa = parents_to(generator.parents(batch), device)
        if generator.cycles:
            composition.append(composition_mae(generator.cf_fn, x, pa, null_steps).cpu())
        for t in intervention.target_cells():
            mask = source != t
            if not mask.any():
                continue
            selected = torch.as_tensor(mask, device=device)
            xs, pas = x[selected], _select(pa, selected)
            codes = intervention.codes(t)
            pa_star = intervene(pas, **codes)
            x_star = generator.cf_fn(xs, pas, pa_star)
            for parent, judge in judges.items():
                logits[parent].append(judge(x_star).cpu())
            record = {
                "row": batch[mask],
                "source": source[mask],
                "target": t,
                **{f"target_{p}": c for p, c in codes.items()},
            }
            if generator.cycles:
                record["reversibility"] = reversibility_mae(generator.cf_fn, xs, pas, pa_star).cpu().numpy()
            if truth_table is not None:
                true_rows = truth_table[record["row"], t]
                if (true_rows < 0).any():
                    raise StoreError(
                        f"true counterfactual store {truth.path} lacks images for target {intervention.name(t)}"
                    )
                errors = error_vs_truth(xs, x_star, store_images(truth, true_rows, device))
                record["mae_cf"], record["mae_identity"] = errors["cf"].cpu().numpy(), errors["identity"].cpu().numpy()
            records.append(pd.DataFrame(record))
    table = pd.concat(records, ignore_index=True)
    return table, {p: torch.cat(v) for p, v in logits.items()}, torch.cat(composition, dim=1) if composition else None
