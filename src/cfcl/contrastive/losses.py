"""NT-Xent (normalised temperature-scaled cross-entropy) with any number of positives per anchor.

Every embedding carries a group id; the other members of its group are its positives, all remaining
embeddings (on every rank) its negatives. The self-similarity is masked out of the softmax, never
subtracted (docs/architecture.md, "Reference settings"), and under ``torch.distributed`` the
embeddings of all ranks are gathered *with* gradients, so the loss and its gradient equal those of
one process holding the whole batch.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import distributed as dist


def _gather(z: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """All ranks' ``z`` concatenated (differentiable), this rank's index and the world size."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, 0, 1
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public one
        warnings.simplefilter("ignore", FutureWarning)
        gathered = all_gather(z)
    return torch.cat(gathered, dim=0), dist.get_rank(), dist.get_world_size()


def nt_xent(z: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean over anchors of ``-mean_{p in positives} log softmax_{k != anchor}(cos(z_a, z_k) / T)[p]``.

    ``z``: ``[N, D]`` projections of this rank; ``groups``: ``[N]`` integer ids, local to this
    rank (a positive is always on the same rank as its anchor). Anchors without a positive
    count only as negatives of the others. Ranks must hold the same ``N`` (drop the last batch).
    """
    if z.ndim != 2 or groups.shape != z.shape[:1]:
        raise ValueError(f"nt_xent needs z [N, D] and groups [N], got {tuple(z.shape)} and {tuple(groups.shape)}")
    z = F.normalize(z.float(), dim=1)
    everyone, rank, world = _gather(z)
    n = z.shape[0]
    columns = torch.arange(n, device=z.device) + rank * n
    logits = z @ everyone.T / temperature
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(n, device=z.device), columns] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    local = torch.zeros(world * n, dtype=torch.bool, device=z.device)
    local[rank * n : (rank + 1) * n] = True
    same_group = torch.zeros_like(is_self)
    same_group[:, local] = groups[:, None] == groups[None, :]
    positive = same_group & ~is_self
    n_positives = positive.sum(dim=1)
    has_positive = n_positives > 0
    if not bool(has_positive.any()):
        raise ValueError("nt_xent: no anchor has a positive (every group has a single member)")
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(dim=1) / n_positives.clamp(min=1)
    return per_anchor[has_positive].mean()
