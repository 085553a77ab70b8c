"""``overview.png``: rows are patients, columns the same patient under each scanner, lesions outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfcl.data.store import ImageStore
from cfcl.layout import OVERVIEW, true_cf
from cfcl.plotting import save_png


def overview_rows(cohort: pd.DataFrame, per_group: int = 2) -> list[int]:
    """Row indices shown: a few ill and healthy images from the ID test and the OOD test split."""
    chosen = []
    for split in ("test", "ood_test"):
        for label in (1, 0):
            rows = np.flatnonzero((cohort["split"] == split).to_numpy() & (cohort["label"] == label).to_numpy())
            chosen.extend(int(i) for i in rows[:per_group])
    return chosen


def save_overview(out: Path, masks: dict[int, np.ndarray]) -> None:
    store = ImageStore.open(out)
    cf = ImageStore.open(true_cf(out))
    rows = sorted(masks)
    n_dom = len(store.domains)
    table = cf.counterfactual_table(len(store), n_dom)
    fig = Figure(figsize=(1.9 * n_dom, 1.9 * len(rows)))
    axes = fig.subplots(len(rows), n_dom, squeeze=False)
    for r, i in enumerate(rows):
        info = store.meta.iloc[i]
        for d in range(n_dom):
            ax = axes[r, d]
            ax.imshow(cf.images[table[i, d]], cmap="gray", vmin=0, vmax=255)
            if masks[i].any():
                ax.contour(masks[i], levels=[0.5], colors="red", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if d == info["domain"]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("orange")
                    spine.set_linewidth(3)
            if r == 0:
                ax.set_title(store.domains[d] + (" (OOD)" if d in store.info["ood_domains"] else ""), fontsize=8)
            if d == 0:
                ax.set_ylabel(f"{info['patient_id']}\n{store.labels[info['label']]} ({info['split']})", fontsize=6)
    fig.suptitle("same patient under every scanner (orange: acquired; red: lesion)", fontsize=8)
    fig.tight_layout()
    save_png(fig, out / OVERVIEW)
