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


def teacher_targets(teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """The teacher's targets: its logits centred and sharpened, ``softmax((teacher - center) / teacher_temp)``."""
    return F.softmax((teacher.float() - center) / teacher_temp, dim=-1)


def dino_loss(
    teacher: torch.Tensor, student: torch.Tensor, center: torch.Tensor, teacher_temp: float, student_temp: float
) -> torch.Tensor:
    """Mean over pairs of different views (teacher view ``t`` != student view ``s``) and images of
    ``-sum_k softmax((teacher - center) / teacher_temp)_k log softmax(student / student_temp)_k``.

    ``teacher``: ``[T, B, K]`` logits of the global views; ``student``: ``[S, B, K]``, its first
    ``T`` views the same global views, then the local crops; ``center``: ``[K]``.
    """
    if (
        teacher.ndim != 3
        or student.ndim != 3
        or teacher.shape[1:] != student.shape[1:]
        or student.shape[0] < teacher.shape[0]
    ):
        raise ValueError(
            "dino_loss needs teacher [T, B, K] and student [S >= T, B, K], "
            f"got {tuple(teacher.shape)}, {tuple(student.shape)}"
        )
    targets = teacher_targets(teacher, center, teacher_temp)
    log_probs = F.log_softmax(student.float() / student_temp, dim=-1)
    cross = -torch.einsum("tbk,sbk->ts", targets, log_probs)
    n_t, n_s, b = teacher.shape[0], student.shape[0], teacher.shape[1]
    same_view = torch.eye(n_t, n_s, dtype=torch.bool, device=cross.device)
    return cross.masked_fill(same_view, 0.0).sum() / ((n_t * n_s - n_t) * b)


def masked_patches(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into ``[B * patches]`` of the masked patches of a ``[B, patches]`` mask, in the
    order of ``mask[mask]``, and each one's iBOT weight: ``1 / (its image's masked patches * B)``.

    Computed where the masks are drawn (the CPU), so that a GPU step selects and weights the
    patches by index and never waits on the host for their number."""
    index = mask.flatten().nonzero().squeeze(1)
    per_image = 1.0 / (mask.sum(dim=1).clamp(min=1) * mask.shape[0])
    return index, per_image[index // mask.shape[1]]


def ibot_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    weights: torch.Tensor,
    center: torch.Tensor,
    teacher_temp: float,
    student_temp: float,
) -> torch.Tensor:
    """iBOT on masked patches: the cross-entropy of each masked patch, averaged within its image,
    summed over images and divided by the number of images (masked or not).

    ``teacher`` / ``student``: ``[M, K]`` logits of the ``M`` masked patches; ``weights``: ``[M]``,
    from :func:`masked_patches` of the mask that picked them.
    """
    if teacher.shape != student.shape or teacher.shape[:1] != weights.shape:
        raise ValueError(
            f"ibot_loss needs [masked, K] logits for the {len(weights)} masked patches, got {tuple(teacher.shape)} "
            f"and {tuple(student.shape)}"
        )
    targets = teacher_targets(teacher, center, teacher_temp)
    per_patch = -(targets * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1)
    return (per_patch * weights).sum()


@torch.no_grad()
def target_entropies(
    teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two collapse diagnostics of DINO's :func:`teacher_targets` (of its ``[..., K]`` logits), in
    nats: the mean entropy of one image's target and the entropy of the batch's mean target. Both
    near ``log K``: every target uniform (collapse to the centre); the second near 0: every image on
    the same prototype. A learning teacher has the first well below ``log K`` and the second well
    above 0. Tensors, so that logging them does not wait on the device."""
    targets = teacher_targets(teacher, center, teacher_temp).reshape(-1, teacher.shape[-1])
    entropy = lambda p: -(p * p.clamp(min=1e-12).log()).sum(dim=-1)  # noqa: E731
    return entropy(targets).mean(), entropy(targets.mean(dim=0))


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
    total = torch.cat([rows.sum(dim=0), rows.new_full((1,), len(rows))])  # new_full: no host-to-device copy
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
    """``teacher = momentum * teacher + (1 - momentum) * student`` for every parameter, in one
    multi-tensor ``lerp`` (a few kernels for the whole model instead of two per parameter).

    Buffers are left alone, as in DINO: the teacher's BatchNorm statistics are those of its own
    forward passes (global views through the teacher's weights); the student's, measured on other
    weights and on the local crops too, would misnormalise the teacher's features in eval mode."""
    pairs = list(zip(teacher.parameters(), student.parameters(), strict=True))
    torch._foreach_lerp_([t for t, _ in pairs], [s.detach() for _, s in pairs], 1.0 - momentum)
