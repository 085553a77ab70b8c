"""Thin Lightning module of counterfactual fine-tuning (the maths is in :mod:`losses`)."""

from __future__ import annotations

import torch

from cfcl.counterfactual.data import split_batch
from cfcl.counterfactual.hvae import HVAE
from cfcl.counterfactual.inference import counterfactual
from cfcl.counterfactual.losses import (
    ascend_multiplier,
    elbo_terms,
    guidance_terms,
    lagrangian,
    random_other_domains,
    round_trip_mae,
)
from cfcl.counterfactual.module import GeneratorModule
from cfcl.counterfactual.parents import intervene


class CounterfactualFinetuneModule(GeneratorModule):
    """Decoder learns to make x* read as the target domain to the frozen guide under two constraints,
    each with a Lagrange multiplier updated by projected gradient ascent: the factual negative ELBO
    stays under ``bound`` and, unless ``round_trip_bound`` is None, the round-trip MAE(x, x* taken
    back) stays under ``round_trip_bound``."""

    def __init__(
        self, model: HVAE, guide: torch.nn.Module, domains: list[int], bound: float, lr: float,
        weight_decay: float, multiplier_init: float, multiplier_lr: float, round_trip_bound: float | None,
        round_trip_multiplier_init: float, round_trip_multiplier_lr: float, **kwargs,
    ):
        for module in model.encoder_modules():
            module.requires_grad_(False)
        super().__init__(model, **kwargs)
        self.guide = guide.requires_grad_(False)
        self.bound, self.lr, self.weight_decay, self.multiplier_lr = bound, lr, weight_decay, multiplier_lr
        self.round_trip_bound, self.round_trip_multiplier_lr = round_trip_bound, round_trip_multiplier_lr
        self.register_buffer("domains", torch.as_tensor(domains, dtype=torch.long))
        self.register_buffer("multiplier", torch.tensor(float(multiplier_init)))
        self.register_buffer("round_trip_multiplier", torch.tensor(float(round_trip_multiplier_init)))

    def train(self, mode: bool = True):
        """The guide (and its BatchNorm statistics) and the encoder never leave eval mode."""
        super().train(mode)
        self.guide.eval()
        for module in self.model.encoder_modules():
            module.eval()
        return self

    def _mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(value.detach(), reduce_op="mean")

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        target = random_other_domains(pa["domain"], self.domains)
        pa_star = intervene(pa, domain=target)
        x_star = counterfactual(self.model, x, pa, pa_star)
        guided = guidance_terms(self.guide, x_star, target)
        factual = elbo_terms(self.model, x, pa, beta=1.0)
        constraints = [(factual["nelbo"], self.bound, self.multiplier.clone())]
        logs = {}
        if self.round_trip_bound is not None:
            round_trip = round_trip_mae(self.model, x, x_star, pa, pa_star)
            constraints.append((round_trip, self.round_trip_bound, self.round_trip_multiplier.clone()))
            self.round_trip_multiplier.copy_(ascend_multiplier(
                self.round_trip_multiplier, self._mean(round_trip), self.round_trip_bound, self.round_trip_multiplier_lr
            ))
            logs = {"train/round_trip_mae": round_trip, "train/round_trip_multiplier": self.round_trip_multiplier}
        loss = lagrangian(guided["ce"], constraints)
        self.multiplier.copy_(ascend_multiplier(self.multiplier, self._mean(factual["nelbo"]), self.bound, self.multiplier_lr))
        self.log_dict(
            {"train/ce": guided["ce"], "train/guide_accuracy": guided["accuracy"], "train/nelbo": factual["nelbo"],
             "train/multiplier": self.multiplier, "train/loss": loss, **logs},
            prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x),
        )
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.trainable(), lr=self.lr, weight_decay=self.weight_decay)
