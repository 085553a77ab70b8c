"""The image mechanism: a conditional VDVAE-style hierarchical VAE.

A bottom-up encoder of residual blocks keeps one activation per resolution. The top-down
decoder starts from a learned map at the lowest resolution and runs decoder blocks up to
full resolution; blocks at or below ``stochastic_max_res`` hold a latent z with a prior
p(z | h, pa) and a posterior q(z | h, encoder activation, pa). The parents (one-hot discrete,
standardised continuous) are added to h in every decoder block, so they condition the prior,
the posterior and the decoder path. The head gives a per-pixel mean and log-scale of a
discretised Gaussian over the image in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cfcl.config import StrictModel
from cfcl.counterfactual.generator.likelihood import MIN_LOG_SCALE, gaussian_kl
from cfcl.counterfactual.parents import ParentSpec, encode_parents
from cfcl.errors import ConfigError


class HVAEArch(StrictModel):
    """Architecture: level i works at image_size / 2**i with ``widths[i]`` channels and ``blocks[i]`` blocks."""

    widths: list[int] = [8, 16, 32, 64]
    blocks: list[int] = [1, 1, 2, 2]
    latent_channels: int = 8
    stochastic_max_res: int = 32
    bottleneck: float = 0.25


@dataclass
class Decoded:
    """Top-down pass: likelihood parameters, the latent of every stochastic block, per-image KL."""

    mu: torch.Tensor
    log_scale: torch.Tensor
    latents: list[torch.Tensor]
    kl: torch.Tensor | None


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    """VDVAE bottleneck block: GELU-conv 1x1, 3x3, 3x3, 1x1, optionally residual."""

    def __init__(self, cin: int, cmid: int, cout: int, residual: bool = True, out_scale: float = 1.0):
        super().__init__()
        self.residual = residual
        self.convs = nn.ModuleList(
            [_conv(cin, cmid, 1), _conv(cmid, cmid, 3), _conv(cmid, cmid, 3), _conv(cmid, cout, 1)]
        )
        with torch.no_grad():
            self.convs[-1].weight.mul_(out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in self.convs:
            y = conv(F.gelu(y))
        return x + y if self.residual else y


class DecoderBlock(nn.Module):
    """Adds the parents to h; if stochastic, draws z from the posterior (or prior) and adds it."""

    def __init__(self, width: int, mid: int, zdim: int, pdim: int, stochastic: bool, out_scale: float):
        super().__init__()
        self.zdim = zdim if stochastic else 0
        self.parents = nn.Linear(pdim, width)
        if stochastic:
            self.prior = ResBlock(width, mid, 2 * zdim + width, residual=False)
            with torch.no_grad():
                self.prior.convs[-1].weight.zero_()
                self.prior.convs[-1].bias.zero_()
            self.posterior = ResBlock(2 * width, mid, 2 * zdim, residual=False)
            self.z_proj = _conv(zdim, width, 1)
            with torch.no_grad():
                self.z_proj.weight.mul_(out_scale)
        self.res = ResBlock(width, mid, width, out_scale=out_scale)

    def forward(
        self, h: torch.Tensor, pa: torch.Tensor, act: torch.Tensor | None, z: torch.Tensor | None, t: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        h = h + self.parents(pa)[:, :, None, None]
        if not self.zdim:
            return self.res(h), None, None
        prior = self.prior(h)
        p_mu, p_logstd, h_prior = prior[:, : self.zdim], prior[:, self.zdim : 2 * self.zdim], prior[:, 2 * self.zdim :]
        kl = None
        if z is None and act is not None:
            q_mu, q_logstd = self.posterior(torch.cat([h, act], dim=1)).chunk(2, dim=1)
            z = q_mu if t is None else q_mu + t * torch.exp(q_logstd) * torch.randn_like(q_mu)
            kl = gaussian_kl(q_mu, q_logstd, p_mu, p_logstd).flatten(1).sum(1)
        elif z is None:
            z = p_mu if t is None else p_mu + t * torch.exp(p_logstd) * torch.randn_like(p_mu)
        h = h + h_prior + self.z_proj(z)
        return self.res(h), z, kl


class HVAE(nn.Module):
    """Conditional hierarchical VAE over 1-channel images in [0, 1] of ``image_size`` pixels."""

    def __init__(self, image_size: int, arch: HVAEArch, specs: list[ParentSpec]):
        super().__init__()
        if len(arch.widths) != len(arch.blocks) or not arch.widths:
            raise ConfigError("arch.widths and arch.blocks must be non-empty lists of the same length")
        if image_size % 2 ** (len(arch.widths) - 1):
            raise ConfigError(
                f"image size {image_size} is not divisible by 2**{len(arch.widths) - 1} "
                f"(arch has {len(arch.widths)} levels)"
            )
        self.image_size, self.arch, self.specs = image_size, arch, list(specs)
        self.resolutions = [image_size // 2**i for i in range(len(arch.widths))]
        if arch.stochastic_max_res < self.resolutions[-1]:
            raise ConfigError(
                f"arch.stochastic_max_res {arch.stochastic_max_res} is below the lowest resolution "
                f"{self.resolutions[-1]}"
            )
        pdim = sum(s.width for s in self.specs)
        n_blocks = sum(arch.blocks)
        scale = 1 / math.sqrt(n_blocks)
        mids = [max(4, int(w * arch.bottleneck)) for w in arch.widths]
        self.stem = _conv(1, arch.widths[0], 3)
        self.enc_levels = nn.ModuleList(
            nn.Sequential(*[ResBlock(w, m, w, out_scale=scale) for _ in range(b)])
            for w, m, b in zip(arch.widths, mids, arch.blocks)
        )
        self.enc_down = nn.ModuleList(_conv(a, b, 1) for a, b in zip(arch.widths[:-1], arch.widths[1:]))
        self.top = nn.Parameter(torch.zeros(1, arch.widths[-1], self.resolutions[-1], self.resolutions[-1]))
        self.dec_levels = nn.ModuleList(
            nn.ModuleList(
                DecoderBlock(w, m, arch.latent_channels, pdim, r <= arch.stochastic_max_res, scale) for _ in range(b)
            )
            for w, m, b, r in zip(arch.widths, mids, arch.blocks, self.resolutions)
        )
        self.dec_up = nn.ModuleList(_conv(b, a, 1) for a, b in zip(arch.widths[:-1], arch.widths[1:]))
        self.head_parents = nn.Linear(pdim, arch.widths[0])
        self.head = _conv(arch.widths[0], 2, 1)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.5, -2.0]))

    def encoder_modules(self) -> list[nn.Module]:
        """The bottom-up path (frozen during counterfactual fine-tuning)."""
        return [self.stem, self.enc_levels, self.enc_down]

    def parent_vector(self, pa: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        return encode_parents({k: v.to(device) for k, v in pa.items()}, self.specs)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up activations, one per level (full resolution first)."""
        h = self.stem(x * 2 - 1)
        acts = []
        for i, level in enumerate(self.enc_levels):
            h = level(h)
            acts.append(h)
            if i < len(self.enc_down):
                h = self.enc_down[i](F.avg_pool2d(h, 2))
        return acts

    def decode_prior(
        self, pa: dict[str, torch.Tensor], t: float | None = None, batch_size: int | None = None
    ) -> Decoded:
        """Top-down pass with latents from the prior; ``t`` scales the sampling noise (None: the prior's mean)."""
        return self._decode(pa, None, None, t, batch_size)

    def decode_posterior(
        self, pa: dict[str, torch.Tensor], acts: list[torch.Tensor], t: float | None = None
    ) -> Decoded:
        """Top-down pass with latents from the posterior given the bottom-up ``acts`` of :meth:`encode`
        (``t`` as in :meth:`decode_prior`); also returns the per-image KL to the prior."""
        return self._decode(pa, acts, None, t, None)

    def decode_latents(
        self, pa: dict[str, torch.Tensor], latents: list[torch.Tensor], batch_size: int | None = None
    ) -> Decoded:
        """Top-down pass with the given latents (one per stochastic block, e.g. abducted ones)."""
        return self._decode(pa, None, latents, None, batch_size)

    def _decode(
        self,
        pa: dict[str, torch.Tensor],
        acts: list[torch.Tensor] | None,
        latents: list[torch.Tensor] | None,
        t: float | None,
        batch_size: int | None,
    ) -> Decoded:
        device = self.top.device
        pvec = self.parent_vector(pa, device)
        n = pvec.shape[0] if batch_size is None else batch_size
        h = self.top.expand(n, -1, -1, -1)
        out_latents: list[torch.Tensor] = []
        kl = torch.zeros(n, device=device) if acts is not None and latents is None else None
        k = 0
        for level in reversed(range(len(self.dec_levels))):
            if level < len(self.dec_levels) - 1:
                h = F.interpolate(
                    self.dec_up[level](h), scale_factor=2, mode="nearest"
                )  # 1x1 conv first: same, cheaper
            for block in self.dec_levels[level]:
                z = None
                if block.zdim and latents is not None:
                    if k >= len(latents):
                        raise ValueError(f"{len(latents)} latents given; the model has more stochastic blocks")
                    z = latents[k]
                h, z, block_kl = block(h, pvec, None if acts is None else acts[level], z, t)
                if z is not None:
                    out_latents.append(z)
                    k += 1
                if block_kl is not None and kl is not None:
                    kl = kl + block_kl
        out = self.head(F.gelu(h + self.head_parents(pvec)[:, :, None, None]))
        mu, log_scale = out[:, :1], torch.clamp(out[:, 1:], min=MIN_LOG_SCALE)
        return Decoded(mu, log_scale, out_latents, kl)

    def arch_dict(self) -> dict:
        """Everything needed to rebuild this model (stored in checkpoints)."""
        return {
            "image_size": self.image_size,
            "arch": self.arch.model_dump(),
            "parents": [s.to_dict() for s in self.specs],
        }

    @classmethod
    def from_arch_dict(cls, d: dict) -> HVAE:
        return cls(d["image_size"], HVAEArch(**d["arch"]), [ParentSpec.from_dict(s) for s in d["parents"]])
