"""Likelihood and divergence terms of the HVAE's ELBO, as pure functions over tensors.

Pixels live in [0, 1] on the 256-level grid k / 255. The discretised Gaussian gives each
pixel the probability mass of its bin (half-width 1 / 510) under N(mu, sigma); the end bins
0 and 1 take the whole tails.
"""

from __future__ import annotations

import math

import torch

HALF_BIN = 0.5 / 255.0
MIN_LOG_SCALE = -7.0


def _log_std_normal_cdf(v: torch.Tensor) -> torch.Tensor:
    return torch.special.log_ndtr(v)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Per-pixel log P(x) for x on the grid k/255 in [0, 1] under a Gaussian discretised to 256 bins."""
    inv_scale = torch.exp(-log_scale)
    upper = (x - mu + HALF_BIN) * inv_scale
    lower = (x - mu - HALF_BIN) * inv_scale
    log_cdf_upper = _log_std_normal_cdf(upper)
    log_sf_lower = _log_std_normal_cdf(-lower)
    # log(Phi(upper) - Phi(lower)) computed on the side of the mean where it is accurate
    mid_right = log_sf_lower + torch.log1p(
        -torch.exp(torch.clamp(_log_std_normal_cdf(-upper) - log_sf_lower, max=-1e-6))
    )
    mid_left = log_cdf_upper + torch.log1p(
        -torch.exp(torch.clamp(_log_std_normal_cdf(lower) - log_cdf_upper, max=-1e-6))
    )
    mid = torch.where(lower > 0, mid_right, mid_left)
    return torch.where(x < HALF_BIN, log_cdf_upper, torch.where(x > 1 - HALF_BIN, log_sf_lower, mid))


def gaussian_kl(
    mu_q: torch.Tensor, log_std_q: torch.Tensor, mu_p: torch.Tensor, log_std_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mu_q, std_q^2) || N(mu_p, std_p^2))."""
    var_ratio = torch.exp(2 * (log_std_q - log_std_p))
    mean_term = ((mu_q - mu_p) * torch.exp(-log_std_p)) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0) - (log_std_q - log_std_p)


def nats_per_dim(total: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image totals ``[B]`` divided by the number of pixels of one image."""
    return total / math.prod(x.shape[1:])
