"""Thin Lightning module of counterfactual fine-tuning (the maths is in :mod:`cfcl.counterfactual.generator.losses`)."""

from __future__ import annotations

import torch

from cfcl.counterfactual.data import split_batch
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.losses import ascend_multiplier, counterfactual_guidance, elbo_terms, lagrangian
from cfcl.counterfactual.generator.module import GeneratorModule


class CounterfactualFinetuneModule(GeneratorModule):
    """Decoder learns to make x*_p read as the target value of p to the frozen guide of each guided parent p
    (the mean of their cross-entropies) under two constraints, each with a Lagrange multiplier updated by
    projected gradient ascent: the factual negative ELBO stays under ``bound`` and, unless ``round_trip_bound``
    is None, the round-trip MAE(x, x*_p taken back), averaged over the parents, stays under ``round_trip_bound``."""

    def __init__(
        self,
        model: HVAE,
        guides: dict[str, torch.nn.Module],
        values: dict[str, list[int]],
        bound: float,
        lr: float,
        weight_decay: float,
        multiplier_init: float,
        multiplier_lr: float,
        round_trip_bound: float | None,
        round_trip_multiplier_init: float,
        round_trip_multiplier_lr: float,
        **kwargs,
    ):
        for module in model.encoder_modules():
            module.requires_grad_(False)
        super().__init__(model, **kwargs)
        self.guides = torch.nn.ModuleDict({parent: guide.requires_grad_(False) for parent, guide in guides.items()})
        self.bound, self.lr, self.weight_decay, self.multiplier_lr = bound, lr, weight_decay, multiplier_lr
        self.round_trip_bound, self.round_trip_multiplier_lr = round_trip_bound, round_trip_multiplier_lr
        for parent, codes in values.items():
            self.register_buffer(f"values_{parent}", torch.as_tensor(codes, dtype=torch.long))
        self.register_buffer("multiplier", torch.tensor(float(multiplier_init)))
        self.register_buffer("round_trip_multiplier", torch.tensor(float(round_trip_multiplier_init)))

    def train(self, mode: bool = True):
        """The guides (and their BatchNorm statistics) and the encoder never leave eval mode."""
        super().train(mode)
        self.guides.eval()
        for module in self.model.encoder_modules():
            module.eval()
        return self

    def _mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(value.detach(), reduce_op="mean")

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        values = {parent: getattr(self, f"values_{parent}") for parent in self.guides}
        guided = counterfactual_guidance(
            self.model, dict(self.guides), values, x, pa, self.round_trip_bound is not None
        )
        factual = elbo_terms(self.model, x, pa, beta=1.0)
        constraints = [(factual["nelbo"], self.bound, self.multiplier.clone())]
        logs = {}
        if self.round_trip_bound is not None:
            round_trip = guided["round_trip_mae"]
            constraints.append((round_trip, self.round_trip_bound, self.round_trip_multiplier.clone()))
            self.round_trip_multiplier.copy_(
                ascend_multiplier(
                    self.round_trip_multiplier,
                    self._mean(round_trip),
                    self.round_trip_bound,
                    self.round_trip_multiplier_lr,
                )
            )
            logs = {"train/round_trip_mae": round_trip, "train/round_trip_multiplier": self.round_trip_multiplier}
        if len(self.guides) > 1:
            for parent in self.guides:
                logs[f"train/ce_{parent}"] = guided[f"ce_{parent}"]
                logs[f"train/guide_accuracy_{parent}"] = guided[f"accuracy_{parent}"]
        loss = lagrangian(guided["ce"], constraints)
        self.multiplier.copy_(
            ascend_multiplier(self.multiplier, self._mean(factual["nelbo"]), self.bound, self.multiplier_lr)
        )
        self.log_dict(
            {
                "train/ce": guided["ce"],
                "train/guide_accuracy": guided["accuracy"],
                "train/nelbo": factual["nelbo"],
                "train/multiplier": self.multiplier,
                "train/loss": loss,
                **logs,
            },
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=len(x),
        )
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.trainable(), lr=self.lr, weight_decay=self.weight_decay)
