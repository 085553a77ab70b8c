"""Tiny artefacts for the public API, `cfcl cf apply`, `cfcl export` and docs/python.md tests:
a run folder laid out as `cfcl run` lays it out, with an untrained generator and encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfcl.counterfactual.config import CFTrainConfig
from cfcl.counterfactual.generator.checkpoint import save_generator
from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
from cfcl.counterfactual.parents import ParentSpec, parent_specs
from cfcl.data.store import INFO, ImageStore, write_store
from cfcl.stage import start_stage
from support.evaluation import tiny_encoder

SCANNERS = ["flatpanel", "cr_plate", "portable", "legacy"]
TINY_ARCH = HVAEArch(widths=[8, 8, 16], blocks=[1, 1, 1], latent_channels=4, stochastic_max_res=8)


def scanner_store(path: Path, size: int = 16, n: int = 96, seed: int = 0) -> ImageStore:
    """Scanner = intensity offset, label = a brighter centre; the last scanner is held out (OOD)."""
    rng = np.random.default_rng(seed)
    n_ood = n // 8
    domain = np.concatenate([np.arange(n - n_ood) % 3, np.full(n_ood, 3)])
    label = np.arange(n) % 2
    split = [
        ("ood_train", "ood_test")[i % 2] if d == 3 else ("train", "train", "val", "test")[(i // 3) % 4]
        for i, d in enumerate(domain)
    ]
    images = rng.normal(0.3, 0.05, (n, size, size)) + 0.1 * domain[:, None, None]
    c = size // 4
    images[:, c:-c, c:-c] += 0.25 * label[:, None, None]
    meta = pd.DataFrame(
        {
            "index": np.arange(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": split,
            "domain": domain,
            "label": label,
        }
    )
    pixels = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    return write_store(path, pixels, meta, SCANNERS, ["healthy", "opacity"], extra={"ood_domains": [3]})


def tiny_generator(folder: Path, store: ImageStore, extra_parents: tuple[ParentSpec, ...] = (), seed: int = 0) -> Path:
    """An untrained generator saved as a `cf train` folder whose manifest records ``store``."""
    specs = [*parent_specs(store, ["domain"], store.indices("train")), *extra_parents]
    torch.manual_seed(seed)
    model = HVAE(store.size[0], TINY_ARCH, specs).eval()
    stage = start_stage("cf_train", folder, CFTrainConfig(data=store.path), inputs={"data": store.path / INFO})
    save_generator(folder, model, {"store": store.content_hash, "domains": store.domains})
    stage.finish()
    return folder


def tiny_run(root: Path) -> Path:
    """``root/runs/demo`` with data/, cf_finetune/ and pretrain/cf-simclr-s0/, as docs/python.md expects."""
    run = root / "runs" / "demo"
    store = scanner_store(run / "data")
    tiny_generator(run / "cf_finetune", store)
    tiny_encoder(run / "pretrain" / "cf-simclr-s0", "cf-simclr", 0, size=store.size[0])
    return run
