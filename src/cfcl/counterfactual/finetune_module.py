"""Thin Lightning module of counterfactual fine-tuning (the maths is in :mod:`losses`)."""

from __future__ import annotations

import torch

from cfcl.counterfactual.data import split_batch
from cfcl.counterfactual.hvae import HVAE
from cfcl.counterfactual.losses import ascend_multiplier, elbo_terms, guidance_terms, lagrangian, random_other_domains
from cfcl.counterfactual.module import GeneratorModule
from cfcl.counterfactual.parents import intervene


class CounterfactualFinetuneModule(GeneratorModule):
    """Decoder learns to make x* read as the target domain to the frozen guide, keeping the factual
    negative ELBO under ``bound`` through a Lagrange multiplier updated by projected gradient ascent."""

    def __init__(
        self, model: HVAE, guide: torch.nn.Module, domains: list[int], bound: float, lr: float,
        weight_decay: float, multiplier_init: float, multiplier_lr: float, **kwargs,
    ):
        for module in model.encoder_modules():
            module.requires_grad_(False)
        super().__init__(model, **kwargs)
        self.guide = guide.requires_grad_(False)
        self.bound, self.lr, self.weight_decay, self.multiplier_lr = bound, lr, weight_decay, multiplier_lr
        self.register_buffer("domains", torch.as_tensor(domains, dtype=torch.long))
        self.register_buffer("multiplier", torch.tensor(float(multiplier_init)))

    def train(self, mode: bool = True):
        """The guide (and its BatchNorm statistics) and the encoder never leave eval mode."""
        super().train(mode)
        self.guide.eval()
        for module in self.model.encoder_modules():
            module.eval()
        return self

    def training_step(self, batch, batch_idx):
        x, pa = split_batch(batch)
        target = random_other_domains(pa["domain"], self.domains)
        guided = guidance_terms(self.model, self.guide, x, pa, intervene(pa, domain=target), target)
        factual = elbo_terms(self.model, x, pa, beta=1.0)
        loss = lagrangian(guided["ce"], factual["nelbo"], self.bound, self.multiplier.clone())
        nelbo = self.trainer.strategy.reduce(factual["nelbo"].detach(), reduce_op="mean")
        self.multiplier.copy_(ascend_multiplier(self.multiplier, nelbo, self.bound, self.multiplier_lr))
        self.log_dict(
            {"train/ce": guided["ce"], "train/guide_accuracy": guided["accuracy"], "train/nelbo": factual["nelbo"],
             "train/multiplier": self.multiplier, "train/loss": loss},
            prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x),
        )
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.trainable(), lr=self.lr, weight_decay=self.weight_decay)
