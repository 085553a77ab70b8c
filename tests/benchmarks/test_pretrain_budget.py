"""benchmarks/pretrain_budget.py --curve: each epoch checkpoint's encoder, DINO's teacher not its student."""

from __future__ import annotations

import torch

from cfcl.contrastive import pretrain
from support.benchmarks import load_benchmark
from support.pretrain import KEEP_EVERY_EPOCH, dino_config


def load_script():
    return load_benchmark("pretrain_budget")


def _weights(encoder) -> list[torch.Tensor]:
    return [t.clone() for t in encoder.state_dict().values()]


def test_epoch_encoders_are_the_teacher_at_the_end_of_each_epoch(stores, tmp_path):
    script = load_script()
    pretrain.run(
        dino_config(
            stores,
            method="dino",
            cf_store=None,
            trainer=KEEP_EVERY_EPOCH,
        ),
        tmp_path,
    )
    curve = [(epoch, _weights(encoder)) for epoch, encoder in script.epoch_encoders(tmp_path, "dino")]
    assert [epoch for epoch, _ in curve] == [1, 2]
    saved = list(torch.load(tmp_path / "encoder.pt", weights_only=True)["state_dict"].values())
    assert all(torch.equal(a, b) for a, b in zip(curve[-1][1], saved, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(curve[0][1], saved, strict=True))
    ((_, student),) = [(e, _weights(enc)) for e, enc in script.epoch_encoders(tmp_path, "simclr") if e == 2]
    assert not all(torch.equal(a, b) for a, b in zip(student, saved, strict=True))
