"""Projection head: the MLP between encoder features and the contrastive loss (SimCLR's g)."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, dims: list[int] | tuple[int, ...]) -> nn.Sequential:
    """``in_dim -> dims[0] -> ... -> dims[-1]``: Linear-BatchNorm-ReLU hidden layers, a plain Linear output.

    The reference head on ResNet-50 is ``projection_head(2048, [1024, 128])`` (2048-1024-128).
    """
    if not dims:
        raise ValueError("projection head needs at least an output dimension")
    layers: list[nn.Module] = []
    for width in dims[:-1]:
        layers += [nn.Linear(in_dim, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(nn.Linear(in_dim, dims[-1]))
    return nn.Sequential(*layers)
