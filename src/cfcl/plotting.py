"""Figures shared by several stages, drawn with matplotlib's object API (no pyplot state, no display).

Each figure is drawn in one place: image grids and training curves for the training stages,
the t-SNE map for the evaluation; the report embeds the PNGs the stages wrote.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure

from cfcl import atomic

DPI = 100


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path) -> bytes:
    """Write ``fig`` as a PNG atomically; returns the bytes written."""
    data = png_bytes(fig)
    atomic.write_bytes(path, data)
    return data


def image_grid(
    cells: list[list[torch.Tensor]], row_labels: list[str], column_titles: list[str] | None = None
) -> Figure:
    """Grey images in [0, 1] (``cells[row][column]``, each ``[H, W]``) with row labels and column titles."""
    n_rows, n_cols = len(cells), len(cells[0])
    fig = Figure(figsize=(1.15 * n_cols, 1.2 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
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


def training_curve(metrics_csv: Path, path: Path, columns: list[str]) -> None:
    """Plot the per-step and per-epoch values of ``columns`` from Lightning's CSV log into ``path``."""
    if not metrics_csv.is_file():
        return
    log = pd.read_csv(metrics_csv)
    present = [c for c in columns if c in log.columns]
    fig = Figure(figsize=(4 * max(1, len(present)), 3))
    axes = fig.subplots(1, max(1, len(present)), squeeze=False)
    for ax, column in zip(axes[0], present):
        rows = log.dropna(subset=[column])
        ax.plot(rows["step"], rows[column])
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("step")
    save_png(fig, path)


def _scatter_by(ax, table: pd.DataFrame, column: str, title: str) -> None:
    for value, group in table.groupby(column, sort=True):
        ax.scatter(group["x"], group["y"], s=6, alpha=0.7, label=str(value))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="best")


def tsne_figure(table: pd.DataFrame, method: str) -> Figure:
    """Two t-SNE panels of the same points (columns x, y, domain, label): by domain and by label."""
    fig = Figure(figsize=(9, 4.2))
    left, right = fig.subplots(1, 2)
    _scatter_by(left, table, "domain", f"{method}: coloured by domain")
    _scatter_by(right, table, "label", f"{method}: coloured by label")
    fig.tight_layout()
    return fig
