"""DINO, iBOT and KoLeo maths against lightly's modules and hand-written loops: values and gradients,
and DINO / iBOT / centres under 2-process DDP (gloo) as on one process with the whole batch."""

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.utils.scheduler import cosine_schedule

from cfcl.contrastive.dino_losses import (
    dino_loss,
    ema_update,
    ibot_loss,
    koleo_loss,
    linear_warmup,
    masked_patches,
    target_entropies,
    updated_center,
)

K = 12


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_dino_loss_equals_a_loop_over_view_pairs_with_centring_and_both_temperatures():
    teacher, student, center = _logits(2, 5, K), _logits(6, 5, K, seed=1), _logits(K, seed=2)
    terms = []
    for t in range(2):
        for s in range(6):
            if s == t:
                continue
            for i in range(5):
                target = torch.softmax((teacher[t, i] - center) / 0.04, dim=0)
                terms.append(-(target * torch.log_softmax(student[s, i] / 0.1, dim=0)).sum())
    expected = torch.stack(terms).mean()
    assert torch.allclose(dino_loss(teacher, student, center, 0.04, 0.1), expected, atol=1e-5)
    # the teacher temperature matters separately from the student's
    assert not torch.allclose(dino_loss(teacher, student, center, 0.07, 0.1), expected, atol=1e-3)


def test_dino_loss_value_and_gradient_match_lightly():
    teacher, center = _logits(2, 4, K), _logits(K, seed=3)
    ours_in = _logits(5, 4, K, seed=1).requires_grad_()
    theirs_in = ours_in.detach().clone().requires_grad_()
    reference = DINOLoss(output_dim=K, teacher_temp=0.06, student_temp=0.1)
    reference.center.copy_(center.view(1, 1, K))
    expected = reference(list(teacher), list(theirs_in), teacher_temp=0.06)
    ours = dino_loss(teacher, ours_in, center, 0.06, 0.1)
    ours.backward(), expected.backward()
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours_in.grad, theirs_in.grad, atol=1e-6)
    # lightly updated its centre inside forward; ours is a separate pure step with the same result
    assert torch.allclose(updated_center(center, teacher, 0.9), reference.center.view(K), atol=1e-6)


def test_ibot_loss_value_and_gradient_match_lightly_and_weight_each_image_equally():
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[0, 0, :3] = True  # 3 masked patches
    mask[2, 1:, 2] = True  # 3 more; image 1 has none but still counts in the mean over images
    mask[2, 0, 0] = True
    m = int(mask.sum())
    teacher, center = _logits(m, K), _logits(K, seed=4)
    ours_in = _logits(m, K, seed=5).requires_grad_()
    theirs_in = ours_in.detach().clone().requires_grad_()
    reference = IBOTPatchLoss(output_dim=K, teacher_temp=0.05, student_temp=0.1)
    reference.center.center.copy_(center.view(1, K))
    expected = reference(teacher, theirs_in, mask, teacher_temp=0.05)
    index, weights = masked_patches(mask.flatten(1))
    assert torch.equal(index, mask.flatten().nonzero().squeeze(1))
    ours = ibot_loss(teacher, ours_in, weights, center, 0.05, 0.1)
    ours.backward(), expected.backward()
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours_in.grad, theirs_in.grad, atol=1e-6)
    per_patch = -(torch.softmax((teacher - center) / 0.05, -1) * torch.log_softmax(ours_in.detach() / 0.1, -1)).sum(-1)
    hand = (per_patch[:3].mean() + per_patch[3:].mean()) / 3
    assert torch.allclose(ours, hand, atol=1e-5)


def test_koleo_value_and_gradient_match_lightly_and_a_hand_nearest_neighbour():
    x = _logits(7, 5).requires_grad_()
    y = x.detach().clone().requires_grad_()
    ours, expected = koleo_loss(x), KoLeoLoss()(y)
    ours.backward(), expected.backward()
    assert torch.allclose(ours, expected, atol=1e-6) and torch.allclose(x.grad, y.grad, atol=1e-6)
    unit = torch.nn.functional.normalize(x.detach(), dim=1)
    distances = torch.cdist(unit, unit) + torch.eye(7) * 10
    assert torch.allclose(ours, -distances.min(dim=1).values.log().mean(), atol=1e-5)


def test_centre_is_an_exponential_moving_average_of_the_teacher_mean():
    center, teacher = torch.zeros(K), _logits(2, 3, K)
    step1 = updated_center(center, teacher, 0.9)
    assert torch.allclose(step1, 0.1 * teacher.reshape(-1, K).mean(0))
    assert torch.allclose(updated_center(step1, teacher, 0.9), 0.9 * step1 + 0.1 * teacher.reshape(-1, K).mean(0))


def test_target_entropies_tell_uniform_targets_from_one_prototype_and_from_a_learning_teacher():
    # every logit equal, or cancelled by the centre: every target uniform, both entropies log K
    for teacher, center in ((torch.zeros(2, 3, K), torch.zeros(K)), (torch.arange(K).repeat(2, 3, 1), torch.arange(K))):
        per_image, of_mean = target_entropies(teacher.float(), center.float(), 0.04)
        assert per_image.item() == pytest.approx(math.log(K)) and of_mean.item() == pytest.approx(math.log(K))
    # sharp targets: two images on prototype 0, two on prototype 1 -> about 0 each, the mean [1/2, 1/2, 0...]: log 2
    teacher = torch.zeros(1, 4, K)
    teacher[0, [0, 1], 0] = teacher[0, [2, 3], 1] = 10.0
    per_image, of_mean = target_entropies(teacher, torch.zeros(K), 0.04)
    assert per_image.item() == pytest.approx(0.0, abs=1e-6) and of_mean.item() == pytest.approx(math.log(2))
    # a softer temperature: one image's target is softmax([10 / T, 0, ...]), its entropy by hand
    p = torch.softmax(torch.tensor([10.0] + [0.0] * (K - 1)) / 4.0, dim=0)
    per_image, _ = target_entropies(teacher, torch.zeros(K), 4.0)
    assert per_image.item() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5)


def test_ema_update_moves_every_teacher_parameter_towards_the_student_and_keeps_its_own_batchnorm_statistics():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    teacher = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    student[1].running_mean.fill_(5.0)
    teacher[1].running_mean.fill_(-1.0)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.99)
    for b, t, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.99 * b + 0.01 * s)
    # the statistics of the teacher's own forward passes, as DINO: the student's would misnormalise its features
    assert torch.equal(teacher[1].running_mean, torch.full((2,), -1.0))


def test_teacher_temperature_warms_up_linearly_then_stays():
    values = [linear_warmup(step, 4, 0.04, 0.07) for step in range(7)]
    assert values == pytest.approx([0.04, 0.0475, 0.055, 0.0625, 0.07, 0.07, 0.07])
    assert linear_warmup(0, 0, 0.04, 0.07) == 0.07


def test_momentum_schedule_is_a_half_cosine_from_start_to_end():
    total = 11
    values = [cosine_schedule(step, total, 0.995, 1.0) for step in range(total)]
    assert values[0] == pytest.approx(0.995) and values[-1] == pytest.approx(1.0)
    assert values[5] == pytest.approx(1.0 - 0.005 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert all(a < b for a, b in zip(values, values[1:]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_data():
    """4 images: 2 global + 2 local views of 6 inputs, teacher logits, and 4 patches each (some masked)."""
    g = torch.Generator().manual_seed(5)
    views, teacher = torch.randn(4, 4, 6, generator=g), torch.randn(2, 4, K, generator=g) * 3
    patches, patch_teacher = torch.randn(4, 4, 6, generator=g), torch.randn(4, 4, K, generator=g) * 3
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    return views, teacher, patches, patch_teacher, mask


def _losses(model, views, teacher, patches, patch_teacher, mask, center):
    """DINO + iBOT loss of ``model`` on these images, and both centres after one update."""
    loss = dino_loss(teacher, model(views), center, 0.05, 0.1)
    loss = loss + ibot_loss(patch_teacher[mask], model(patches[mask]), masked_patches(mask)[1], center, 0.05, 0.1)
    return loss, updated_center(center, teacher, 0.9), updated_center(center, patch_teacher[mask], 0.9)


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(6, K))
    views, teacher, patches, patch_teacher, mask = _ddp_data()
    half = slice(2 * rank, 2 * rank + 2)
    loss, center, patch_center = _losses(
        model, views[:, half], teacher[:, half], patches[half], patch_teacher[half], mask[half], torch.ones(K)
    )
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    torch.save((mean_loss / 2, model.module.weight.grad, center, patch_center), f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, K)
    views, teacher, patches, patch_teacher, mask = _ddp_data()
    # the ranks hold 2 and 4 masked patches: the patch centre is still the mean of all 6
    loss, center, patch_center = _losses(model, views, teacher, patches, patch_teacher, mask, torch.ones(K))
    loss.backward()
    for rank in range(2):
        ddp_loss, grad, ddp_center, ddp_patch_center = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert ddp_loss.item() == pytest.approx(loss.item(), abs=1e-6)
        assert torch.allclose(grad, model.weight.grad, atol=1e-6)
        assert torch.allclose(ddp_center, center, atol=1e-6) and torch.allclose(
            ddp_patch_center, patch_center, atol=1e-6
        )
