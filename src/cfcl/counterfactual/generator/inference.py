"""Counterfactual inference with the HVAE: abduction, action, prediction (pure functions).

Abduction infers the latents z of every stochastic block from the posterior q(z | x, pa)
(its mean, or a draw with temperature ``t``) and the pixel noise u = (x - mu(z, pa)) / sigma(z, pa)
that makes the mechanism reproduce x exactly. Prediction decodes the same z and u under the
intervened parents pa*: x* = clamp(mu(z, pa*) + sigma(z, pa*) * u, 0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.parents import check_discrete


@dataclass
class Abduction:
    """The exogenous state of a batch of images: latents of every stochastic block and pixel noise."""

    latents: list[torch.Tensor]
    u: torch.Tensor


def pixel_noise(x: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """u = (x - mu) / sigma with sigma = exp(log_scale)."""
    return (x - mu) * torch.exp(-log_scale)


def apply_noise(mu: torch.Tensor, log_scale: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """clamp(mu + sigma * u) to the image range [0, 1]."""
    return torch.clamp(mu + torch.exp(log_scale) * u, 0.0, 1.0)


def abduct(model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], t: float | None = None) -> Abduction:
    """Latents and pixel noise of images ``x`` [B, 1, H, W] in [0, 1] with parents ``pa``."""
    decoded = model.decode_posterior(pa, model.encode(x), t=t)
    return Abduction(decoded.latents, pixel_noise(x, decoded.mu, decoded.log_scale))


def predict(model: HVAE, abduction: Abduction, pa_star: dict[str, torch.Tensor]) -> torch.Tensor:
    """Decode abducted latents and noise under the parents ``pa_star``."""
    for spec in model.specs:
        if spec.kind == "discrete" and spec.name in pa_star:
            check_discrete(spec, pa_star[spec.name])
    decoded = model.decode_latents(pa_star, abduction.latents, batch_size=abduction.u.shape[0])
    return apply_noise(decoded.mu, decoded.log_scale, abduction.u)


def counterfactual(
    model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], pa_star: dict[str, torch.Tensor], t: float | None = None
) -> torch.Tensor:
    """x* : what ``x`` would have looked like had its parents been ``pa_star``."""
    return predict(model, abduct(model, x, pa, t), pa_star)
