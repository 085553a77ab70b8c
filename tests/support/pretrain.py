"""Tiny stores of noise images and pretrain configs on them, for the ``cfcl pretrain`` tests (the
``stores`` fixture in conftest.py builds them), and a stop after a given step to test resuming."""

import lightning as L
import numpy as np
import pandas as pd

from cfcl.config import build_config
from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.data.store import write_store

SIZE = 16
N_TRAIN = 24
DOMAINS = ["a", "b", "c"]  # c is out-of-distribution
TINY_VIT = {
    "arch": "vit",
    "arch_kwargs": {"image_size": SIZE, "patch_size": 4, "width": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
}


def _noise(n, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def noise_store(path, size=SIZE, seed=0):
    """An image store of noise: N_TRAIN training images of domains a and b, 4 for validation, 4 of the OOD domain c."""
    n = N_TRAIN + 8
    split = ["train"] * N_TRAIN + ["val"] * 4 + ["ood_test"] * 4
    domain = [i % 2 for i in range(N_TRAIN + 4)] + [2] * 4
    meta = pd.DataFrame(
        {
            "index": range(n),
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": split,
            "domain": domain,
            "label": [i % 2 for i in range(n)],
        }
    )
    return write_store(
        path, _noise(n, size, seed), meta, DOMAINS, ["no", "yes"], extra={"ood_domains": [2], "synthetic": True}
    )


def noise_cf_store(path, data, size=SIZE):
    """A counterfactual store of ``data``: a noise image for every image and domain."""
    pairs = [(i, d) for i in range(len(data)) for d in range(len(DOMAINS))]
    meta = pd.DataFrame(
        {
            "index": range(len(pairs)),
            "source_index": [i for i, _ in pairs],
            "target_domain": [d for _, d in pairs],
            "split": [data.meta["split"][i] for i, _ in pairs],
            "domain": [d for _, d in pairs],
        }
    )
    return write_store(
        path,
        _noise(len(pairs), size, 7),
        meta,
        DOMAINS,
        ["no", "yes"],
        kind="counterfactuals",
        extra={"source_store": data.content_hash},
    )


TRAINER = {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu", "log_every_n_steps": 1}
"""The trainer of both configs below: 2 epochs on the CPU, logged every step."""
KEEP_EVERY_EPOCH = {**TRAINER, "keep_every_n_epochs": 1}
"""`TRAINER` keeping each epoch's checkpoint."""


def pretrain_config(stores, **overrides):
    """A SimCLR config on the ``stores`` fixture's data: a tiny ResNet, 2 epochs on the CPU."""
    values = {
        "data": str(stores / "data"),
        "batch_size": 4,
        "projection": [16, 8],
        "warmup_steps": 2,
        "encoder": {"arch": "small", "arch_kwargs": {"width": 4, "blocks": [1, 1]}},
        "trainer": TRAINER,
        **overrides,
    }
    return build_config(PretrainConfig, base=values)


def dino_config(stores, **overrides):
    """A CF-DINO config on the ``stores`` fixture's data: a one-block ViT, a small head, 2 epochs on the CPU."""
    values = {
        "data": str(stores / "data"),
        "method": "cf-dino",
        "cf_store": str(stores / "cf"),
        "batch_size": 4,
        "encoder": TINY_VIT,
        "lr": 1e-3,
        "optimizer": "adamw",
        "dino": {
            "prototypes": 32,
            "head_hidden": 16,
            "head_bottleneck": 8,
            "n_local": 2,
            "local_size": 8,
            "ibot_weight": 1.0,
            "mask_p": 1.0,
            "teacher_temp_warmup_epochs": 1.0,
            "warmup_epochs": 0.5,
        },
        "trainer": TRAINER,
        **overrides,
    }
    return build_config(PretrainConfig, base=values)


class Interrupted(Exception):
    """Raised inside training by :func:`interrupt_after`, as a Ctrl-C would stop it."""


def interrupt_after(monkeypatch, step):
    """Every pretraining run from now on stops when it has made ``step`` optimizer steps."""

    class Stop(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == step:
                raise Interrupted

    real = pretrain.make_trainer
    monkeypatch.setattr(pretrain, "make_trainer", lambda cfg, out, **kw: real(cfg, out, callbacks=[Stop()], **kw))
