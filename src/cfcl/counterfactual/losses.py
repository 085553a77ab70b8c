"""Training objectives of the generator as pure functions over tensors."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cfcl.counterfactual.hvae import HVAE
from cfcl.counterfactual.inference import abduct, predict
from cfcl.counterfactual.likelihood import discretized_gaussian_log_likelihood, nats_per_dim


def elbo_terms(model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image negative log-likelihood and KL in nats per pixel, and the beta-weighted loss (batch means)."""
    decoded = model.decode(pa, acts=model.encode(x), t=1.0)
    nll = nats_per_dim(-discretized_gaussian_log_likelihood(x, decoded.mu, decoded.log_scale).flatten(1).sum(1), x)
    kl = nats_per_dim(decoded.kl, x)
    return {"loss": (nll + beta * kl).mean(), "nll": nll.mean(), "kl": kl.mean(), "nelbo": (nll + kl).mean()}


def guidance_terms(
    model: HVAE,
    guide: torch.nn.Module,
    x: torch.Tensor,
    pa: dict[str, torch.Tensor],
    pa_star: dict[str, torch.Tensor],
    target: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Cross-entropy of the guidance classifier on the counterfactuals x* against ``target`` domains."""
    x_star = predict(model, abduct(model, x, pa), pa_star)
    logits = guide(x_star)
    return {"ce": F.cross_entropy(logits, target), "accuracy": (logits.argmax(1) == target).float().mean()}


def random_other_domains(source: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """For each source domain, a target drawn uniformly from ``domains`` other than itself."""
    k = len(domains)
    position = (source[:, None] == domains[None, :]).long().argmax(1)
    step = torch.randint(1, k, source.shape, device=source.device)
    return domains[(position + step) % k]


def lagrangian(ce: torch.Tensor, nelbo: torch.Tensor, bound: float, multiplier: torch.Tensor) -> torch.Tensor:
    """CE + lambda * (negative ELBO - bound): the decoder minimises it, lambda >= 0 ascends it."""
    return ce + multiplier * (nelbo - bound)


def ascend_multiplier(multiplier: torch.Tensor, nelbo: float | torch.Tensor, bound: float, lr: float) -> torch.Tensor:
    """One projected gradient-ascent step on the multiplier: max(0, lambda + lr * (nelbo - bound))."""
    return torch.clamp(multiplier + lr * (torch.as_tensor(nelbo, dtype=multiplier.dtype) - bound), min=0.0)
