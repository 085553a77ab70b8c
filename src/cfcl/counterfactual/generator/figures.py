"""Figures of the generator: counterfactual grids and prior samples (the shared ones are in :mod:`cfcl.plotting`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.inference import abduct, predict
from cfcl.counterfactual.parents import intervene, parents_to
from cfcl.counterfactual.quality.inputs import Generator, Intervention, store_images
from cfcl.data.store import ImageStore
from cfcl.plotting import image_grid, save_png


@torch.no_grad()
def counterfactual_grid(model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], path: Path) -> None:
    """Rows: the images, the model mean mu(z, pa), then x* for every domain the model saw."""
    spec = next((s for s in model.specs if s.name == "domain"), None)
    abduction = abduct(model, x, pa)
    rows = [("image", x), ("mean", model.decode_latents(pa, abduction.latents, batch_size=len(x)).mu.clamp(0, 1))]
    if spec is not None:
        rows += [(f"do({spec.names[d]})", predict(model, abduction, intervene(pa, domain=d))) for d in spec.seen]
    cells = [[images[c, 0] for c in range(len(x))] for _, images in rows]
    save_png(image_grid(cells, [title for title, _ in rows]), path)


@torch.no_grad()
def prior_samples(model: HVAE, pa: dict[str, torch.Tensor], path: Path, t: float = 0.7) -> None:
    """Random images from the prior at temperature ``t`` with the given parents."""
    images = model.decode_prior(pa, t=t).mu.clamp(0, 1)
    fig = Figure(figsize=(1.2 * len(images), 1.3))
    for c, ax in enumerate(fig.subplots(1, len(images), squeeze=False)[0]):
        ax.imshow(images[c, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    save_png(fig, path)


@torch.no_grad()
def quality_grid(
    generator: Generator,
    store: ImageStore,
    rows: np.ndarray,
    intervention: Intervention,
    truth: ImageStore | None,
    device: torch.device,
    path: Path,
) -> None:
    """One row per image (labelled by its own cell); columns the image, its counterfactual to each target
    cell (with the domain alone: each domain), the true ones."""
    x = store_images(store, rows, device)
    pa = parents_to(generator.parents(rows), device)
    cells = intervention.target_cells()
    columns = [("image", x)]
    for c in cells:
        columns.append((f"do({intervention.name(c)})", generator.cf_fn(x, pa, intervene(pa, **intervention.codes(c)))))
    if truth is not None:
        table = truth.counterfactual_table(len(store), len(store.domains))
        columns += [(f"true {intervention.name(c)}", store_images(truth, table[rows, c], device)) for c in cells]
    grid = [[images[r, 0] for _, images in columns] for r in range(len(rows))]
    row_labels = [intervention.name(c) for c in intervention.own_cells(store, rows)]
    save_png(image_grid(grid, row_labels, [title for title, _ in columns]), path)
