"""NT-Xent: equal to lightly's NTXentLoss for pairs, to a plain loop for several positives,
and the same loss and gradients under 2-process DDP (gloo) as in one process."""

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from lightly.loss import NTXentLoss

from cfcl.contrastive.losses import nt_xent


def _pair_groups(b: int) -> torch.Tensor:
    return torch.arange(b).repeat(2)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_pair_case_equals_lightly_values_and_gradients(temperature):
    torch.manual_seed(0)
    out0 = torch.randn(6, 5, requires_grad=True)
    out1 = torch.randn(6, 5, requires_grad=True)
    ours = nt_xent(torch.cat([out0, out1]), _pair_groups(6), temperature)
    ours_grads = torch.autograd.grad(ours, [out0, out1])
    theirs = NTXentLoss(temperature=temperature)(out0, out1)
    theirs_grads = torch.autograd.grad(theirs, [out0, out1])
    assert torch.allclose(ours, theirs, atol=1e-5)
    for a, b in zip(ours_grads, theirs_grads):
        assert torch.allclose(a, b, atol=1e-5)


def _loop_loss(z: torch.Tensor, groups: list[int], t: float) -> torch.Tensor:
    z = torch.nn.functional.normalize(z, dim=1)
    terms = []
    for a in range(len(z)):
        sims = [torch.dot(z[a], z[k]) / t for k in range(len(z)) if k != a]
        denominator = torch.logsumexp(torch.stack(sims), dim=0)
        positives = [p for p in range(len(z)) if p != a and groups[p] == groups[a]]
        if positives:
            terms.append(sum(denominator - torch.dot(z[a], z[p]) / t for p in positives) / len(positives))
    return sum(terms) / len(terms)


def test_multi_positive_equals_plain_loop_values_and_gradients():
    torch.manual_seed(1)
    groups = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]  # group 3 has no positive: only a negative
    z = torch.randn(len(groups), 4, requires_grad=True)
    ours = nt_xent(z, torch.tensor(groups), 0.2)
    (g_ours,) = torch.autograd.grad(ours, z)
    reference = _loop_loss(z, groups, 0.2)
    (g_ref,) = torch.autograd.grad(reference, z)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(g_ours, g_ref, atol=1e-5)


def test_self_similarity_is_masked_not_subtracted():
    # two identical embeddings in different groups: the loss must still treat them as a hard negative
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss = nt_xent(z, torch.tensor([0, 1, 0, 1]), 1.0)
    # anchor 0: positive 2 (cos 0), negatives 1 (cos 1), 3 (cos 0)
    expected = -(0.0 - math.log(math.exp(1.0) + 2 * math.exp(0.0)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_no_positive_at_all_is_an_error():
    with pytest.raises(ValueError, match="no anchor has a positive"):
        nt_xent(torch.randn(3, 2), torch.tensor([0, 1, 2]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    torch.manual_seed(3)
    x = torch.randn(8, 6)  # 4 per rank: views of 2 images each (pairs by local group id)
    groups = torch.tensor([0, 1, 0, 1])
    return x, groups


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(6, 3))
    x, groups = _data()
    loss = nt_xent(model(x[4 * rank : 4 * rank + 4]), groups, 0.3)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    torch.save((mean_loss / 2, model.module.weight.grad, model.module.bias.grad), f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, groups = _data()
    # one process: ranks' local groups become distinct global groups
    loss = nt_xent(model(x), torch.cat([groups, groups + 2]), 0.3)
    loss.backward()
    for ddp_loss, w_grad, b_grad in results:
        assert ddp_loss.item() == pytest.approx(loss.item(), abs=1e-6)
        assert torch.allclose(w_grad, model.weight.grad, atol=1e-6)
        assert torch.allclose(b_grad, model.bias.grad, atol=1e-6)
