"""Training objectives of the generator as pure functions over tensors."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.inference import abduct, counterfactual, predict
from cfcl.counterfactual.generator.likelihood import discretized_gaussian_log_likelihood, nats_per_dim
from cfcl.counterfactual.parents import intervene
from cfcl.counterfactual.quality.metrics import mae


def elbo_terms(model: HVAE, x: torch.Tensor, pa: dict[str, torch.Tensor], beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image negative log-likelihood and KL in nats per pixel, and the beta-weighted loss (batch means)."""
    decoded = model.decode_posterior(pa, model.encode(x), t=1.0)
    nll = nats_per_dim(-discretized_gaussian_log_likelihood(x, decoded.mu, decoded.log_scale).flatten(1).sum(1), x)
    kl = nats_per_dim(decoded.kl, x)
    return {"loss": (nll + beta * kl).mean(), "nll": nll.mean(), "kl": kl.mean(), "nelbo": (nll + kl).mean()}


def guidance_terms(guide: torch.nn.Module, x_star: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of the guidance classifier on the counterfactuals ``x_star`` against the ``target`` values of its
    parent."""
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


def random_other_values(source: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """For each source value of a discrete parent, a target drawn uniformly from ``values`` other than itself;
    for a source outside ``values`` (an unknown value, e.g. a missing sex), from all of them."""
    k = len(values)
    matches = source[:, None] == values[None, :]
    step = torch.randint(1, k, source.shape, device=source.device)
    target = values[(matches.long().argmax(1) + step) % k]
    unknown = ~matches.any(1)
    if unknown.any():
        target[unknown] = values[torch.randint(0, k, (int(unknown.sum()),), device=source.device)]
    return target


def counterfactual_guidance(
    model: HVAE,
    guides: dict[str, torch.nn.Module],
    values: dict[str, torch.Tensor],
    x: torch.Tensor,
    pa: dict[str, torch.Tensor],
    round_trip: bool,
) -> dict[str, torch.Tensor]:
    """What counterfactual fine-tuning minimises, per guided parent p (in ``guides`` order): each image's p alone
    set to a random other value of ``values[p]``, x*_p decoded, guide p's cross-entropy (``ce_<p>``) and accuracy
    (``accuracy_<p>``) on x*_p against it and, with ``round_trip``, MAE(x, x*_p taken back) (``round_trip_mae_<p>``).
    ``ce``, ``accuracy`` and ``round_trip_mae`` are their means over the parents, so no parent outweighs another."""
    abduction = abduct(model, x, pa)
    terms: dict[str, torch.Tensor] = {}
    for parent, guide in guides.items():
        target = random_other_values(pa[parent], values[parent])
        pa_star = intervene(pa, **{parent: target})
        x_star = predict(model, abduction, pa_star)
        guided = guidance_terms(guide, x_star, target)
        terms[f"ce_{parent}"], terms[f"accuracy_{parent}"] = guided["ce"], guided["accuracy"]
        if round_trip:
            terms[f"round_trip_mae_{parent}"] = round_trip_mae(model, x, x_star, pa, pa_star)
    for term in ("ce", "accuracy", "round_trip_mae") if round_trip else ("ce", "accuracy"):
        terms[term] = torch.stack([terms[f"{term}_{parent}"] for parent in guides]).mean()
    return terms


def lagrangian(objective: torch.Tensor, constraints: list[tuple[torch.Tensor, float, torch.Tensor]]) -> torch.Tensor:
    """objective + sum of lambda_i * (value_i - bound_i) over ``(value, bound, lambda)`` constraints value_i <= bound_i:
    the decoder minimises it, each lambda_i >= 0 ascends it."""
    return objective + sum(multiplier * (value - bound) for value, bound, multiplier in constraints)


def ascend_multiplier(multiplier: torch.Tensor, value: float | torch.Tensor, bound: float, lr: float) -> torch.Tensor:
    """One projected gradient-ascent step on the multiplier: max(0, lambda + lr * (value - bound))."""
    return torch.clamp(multiplier + lr * (torch.as_tensor(value, dtype=multiplier.dtype) - bound), min=0.0)
