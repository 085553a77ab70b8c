"""Training objectives of the generator as pure functions over tensors."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cfcl.counterfactual.hvae import HVAE
from cfcl.counterfactual.inference import counterfactual
from cfcl.counterfactual.likelihood import discretized_gaussian_log_likelihood, nats_per_dim
from cfcl.counterfactual.quality import mae


def elbo_terms(model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image negative log-likelihood and KL in nats per pixel, and the beta-weighted loss (batch means)."""
    decoded = model.decode_posterior(pa, model.encode(x), t=1.0)
    nll = nats_per_dim(-discretized_gaussian_log_likelihood(x, decoded.mu, decoded.log_scale).flatten(1).sum(1), x)
    kl = nats_per_dim(decoded.kl, x)
    return {"loss": (nll + beta * kl).mean(), "nll": nll.mean(), "kl": kl.mean(), "nelbo": (nll + kl).mean()}


def guidance_terms(guide: torch.nn.Module, x_star: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of the guidance classifier on the counterfactuals ``x_star`` against ``target`` domains."""
    logits = guide(x_star)
    return {"ce": F.cross_entropy(logits, target), "accuracy": (logits.argmax(1) == target).float().mean()}


def round_trip_mae(
    model: HVAE, x: torch.Tensor, x_star: torch.Tensor, pa: dict[str, torch.Tensor], pa_star: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mean MAE(x, x_star taken back from ``pa_star`` to ``pa``): the reversibility error, differentiable.

    Going back re-abducts the latents from x*; the round trip is exact (up to clamping) only if
    the posterior of x* under pa* gives back the latents of x under pa, or the decoder ignores
    where they differ. Both the posterior and the decoder (the top-down path) learn from this term.
    """
    return mae(x, counterfactual(model, x_star, pa_star, pa)).mean()


def random_other_domains(source: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """For each source domain, a target drawn uniformly from ``domains`` other than itself."""
    k = len(domains)
    position = (source[:, None] == domains[None, :]).long().argmax(1)
    step = torch.randint(1, k, source.shape, device=source.device)
    return domains[(position + step) % k]


def lagrangian(
    objective: torch.Tensor, constraints: list[tuple[torch.Tensor, float, torch.Tensor]]
) -> torch.Tensor:
    """objective + sum of lambda_i * (value_i - bound_i) over ``(value, bound, lambda)`` constraints value_i <= bound_i:
    the decoder minimises it, each lambda_i >= 0 ascends it."""
    return objective + sum(multiplier * (value - bound) for value, bound, multiplier in constraints)


def ascend_multiplier(multiplier: torch.Tensor, value: float | torch.Tensor, bound: float, lr: float) -> torch.Tensor:
    """One projected gradient-ascent step on the multiplier: max(0, lambda + lr * (value - bound))."""
    return torch.clamp(multiplier + lr * (torch.as_tensor(value, dtype=multiplier.dtype) - bound), min=0.0)
