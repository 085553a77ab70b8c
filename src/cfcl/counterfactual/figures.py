"""Figures of the generator stages: sample grids and training curves (PNG, matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cfcl import atomic  # noqa: E402
from cfcl.counterfactual.hvae import HVAE  # noqa: E402
from cfcl.counterfactual.inference import abduct, predict  # noqa: E402
from cfcl.counterfactual.parents import intervene  # noqa: E402


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _save(fig, path: Path) -> None:
    atomic.write_bytes(path, png_bytes(fig))


def image_grid(cells: list[list[torch.Tensor]], row_labels: list[str], column_titles: list[str] | None = None):
    """A figure of grey images in [0, 1] (``cells[row][column]``, each ``[H, W]``) with labels."""
    n_rows, n_cols = len(cells), len(cells[0])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.15 * n_cols, 1.2 * n_rows), squeeze=False)
    for r, row in enumerate(cells):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and column_titles is not None:
                ax.set_title(column_titles[c], fontsize=6)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
    return fig


@torch.no_grad()
def counterfactual_grid(model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], path: Path) -> None:
    """Rows: the images, the model mean mu(z, pa), then x* for every domain the model saw."""
    spec = next((s for s in model.specs if s.name == "domain"), None)
    abduction = abduct(model, x, pa)
    rows = [("image", x), ("mean", model.decode(pa, latents=abduction.latents, batch_size=len(x)).mu.clamp(0, 1))]
    if spec is not None:
        rows += [(f"do({spec.names[d]})", predict(model, abduction, intervene(pa, domain=d))) for d in spec.seen]
    cells = [[images[c, 0] for c in range(len(x))] for _, images in rows]
    _save(image_grid(cells, [title for title, _ in rows]), path)


@torch.no_grad()
def prior_samples(model: HVAE, pa: dict[str, torch.Tensor], path: Path, t: float = 0.7) -> None:
    """Random images from the prior at temperature ``t`` with the given parents."""
    images = model.decode(pa, t=t).mu.clamp(0, 1)
    fig, axes = plt.subplots(1, len(images), figsize=(1.2 * len(images), 1.3), squeeze=False)
    for c, ax in enumerate(axes[0]):
        ax.imshow(images[c, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    _save(fig, path)


def training_curve(metrics_csv: Path, path: Path, columns: list[str]) -> None:
    """Plot the per-step and per-epoch values of ``columns`` from Lightning's CSV log."""
    if not metrics_csv.is_file():
        return
    log = pd.read_csv(metrics_csv)
    present = [c for c in columns if c in log.columns]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4 * max(1, len(present)), 3), squeeze=False)
    for ax, column in zip(axes[0], present):
        rows = log.dropna(subset=[column])
        ax.plot(rows["step"], rows[column])
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("step")
    _save(fig, path)
