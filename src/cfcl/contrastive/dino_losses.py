"""DINO-v2 self-distillation maths as pure functions over tensors: the losses, centring, EMA.

The formulas are those of lightly's ``DINOLoss``, ``IBOTPatchLoss`` and ``KoLeoLoss`` (the
tests check ours against them); they are written here as functions because lightly's modules
update their centre inside ``forward``, whereas here the centre is state of the Lightning
module, checkpointed with it, and updated once per step after the loss. Centres are means over
every process (sums and counts reduced), so under DDP they equal those of one process with the
whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist


def dino_loss(
    teacher: torch.Tensor, student: torch.Tensor, center: torch.Tensor, teacher_temp: float, student_temp: float
) -> torch.Tensor:
    """Mean over pairs of different views (teacher view ``t`` != student view ``s``) and images of
    ``-sum_k softmax((teacher - center) / teacher_temp)_k log softmax(student / student_temp)_k``.

    ``teacher``: ``[T, B, K]`` logits of the global views; ``student``: ``[S, B, K]``, its first
    ``T`` views the same global views, then the local crops; ``center``: ``[K]``.
    """
    if teacher.ndim != 3 or student.ndim != 3 or teacher.shape[1:] != student.shape[1:] or student.shape[0] < teacher.shape[0]:
        raise ValueError(f"dino_loss needs teacher [T, B, K] and student [S >= T, B, K], got {tuple(teacher.shape)}, {tuple(student.shape)}")
    targets = F.softmax((teacher.float() - center) / teacher_temp, dim=-1)
    log_probs = F.log_softmax(student.float() / student_temp, dim=-1)
    cross = -torch.einsum("tbk,sbk->ts", targets, log_probs)
    n_t, n_s, b = teacher.shape[0], student.shape[0], teacher.shape[1]
    same_view = torch.eye(n_t, n_s, dtype=torch.bool, device=cross.device)
    return cross.masked_fill(same_view, 0.0).sum() / ((n_t * n_s - n_t) * b)


def ibot_loss(
    teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor, center: torch.Tensor, teacher_temp: float,
    student_temp: float,
) -> torch.Tensor:
    """iBOT on masked patches: the cross-entropy of each masked patch, averaged within its image,
    summed over images and divided by the number of images (masked or not).

    ``teacher`` / ``student``: ``[M, K]`` logits of the ``M`` masked patches, in the order of
    ``mask[mask]``; ``mask``: ``[B, patches]``.
    """
    if teacher.shape != student.shape or teacher.shape[0] != int(mask.sum()):
        raise ValueError(f"ibot_loss needs [masked, K] logits for the {int(mask.sum())} masked patches, got {tuple(teacher.shape)}")
    targets = F.softmax((teacher.float() - center) / teacher_temp, dim=-1)
    per_patch = -(targets * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1)
    weights = (1.0 / mask.sum(dim=1, keepdim=True).clamp(min=1)).expand_as(mask)[mask]
    return (per_patch * weights).sum() / mask.shape[0]


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate: ``-mean log(distance to the nearest other sample)`` of the
    L2-normalised ``[B, D]`` features; pushes the batch to spread over the sphere."""
    x = F.normalize(features.float(), dim=-1, eps=eps)
    similarity = (x @ x.T).fill_diagonal_(-2.0)
    nearest = similarity.argmax(dim=1)
    distance = F.pairwise_distance(x, x[nearest], eps=eps)
    return -(distance + eps).log().mean()


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float) -> torch.Tensor:
    """``momentum * center + (1 - momentum) * mean(teacher logits)`` over all rows of every process
    (sums and counts are reduced, so ranks with different numbers of rows, e.g. masked patches, are exact)."""
    rows = teacher.float().reshape(-1, teacher.shape[-1])
    total = torch.cat([rows.sum(dim=0), torch.tensor([len(rows)], dtype=rows.dtype, device=rows.device)])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
    return center * momentum + total[:-1] / total[-1].clamp(min=1) * (1.0 - momentum)


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """``start`` to ``end`` linearly over ``warmup_steps``, then ``end`` (the teacher temperature)."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter (buffers copied)."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)
