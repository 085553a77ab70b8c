"""Does cfcl's DINO learn where it must? Ten grossly different texture classes, minutes on a CPU.

The script writes a store of 32-px textures (stripes of four orientations, a checkerboard, dots,
rings, a disk, a cross, speckle; each with a random phase, contrast, brightness, a random
brightness ramp and noise) with cfcl's store writer, pretrains the small ResNet with cfcl's
``dino`` at the settings it ships for small data (``PretrainConfig`` and ``DinoConfig``
defaults) and ``simclr`` beside it, both at batch 32 for ``--epochs`` 20 (1,240 steps), DINO
without local crops (see :func:`config`), and probes each frozen encoder (DINO: the teacher)
with cfcl's linear probe on 10 % of the training labels, scored by balanced accuracy on the test
split, beside the random encoder of the same seed. ``--reference`` adds lightly's DINO training
step (lightly's ``DINOProjectionHead``, ``DINOLoss``, ``update_momentum``, ``cosine_schedule``,
assembled as in lightly's DINO example) on the same store, encoder, views and number of steps:
an A/B of the training step alone. Prints one JSON line per seed and method, then a Markdown table.

    python benchmarks/dino_easy.py --out runs/dino_easy --seeds 0 1 2 --reference

Pretraining runs are cached in ``OUT/METHOD-sSEED`` like any pretrain stage, so a rerun only probes.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule

from cfcl.api import embed, load_encoder
from cfcl.config import build_config
from cfcl.contrastive import pretrain
from cfcl.contrastive.augment import build_augment
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.data import ViewBatches, open_pretrain_data
from cfcl.contrastive.encoders import build_encoder
from cfcl.data.store import ImageStore, write_store
from cfcl.evaluation.metrics import balanced_accuracy
from cfcl.evaluation.probe import fit_probe
from cfcl.evaluation.subsets import labelled_subset

CLASSES = ["rows", "columns", "rising", "falling", "checks", "dots", "rings", "disk", "cross", "speckle"]
SIZE = 32
LOCAL_SIZE = 16


def textures(labels: np.ndarray, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """uint8 ``[N, size, size]`` images of the classes ``labels`` (indices into :data:`CLASSES`)."""
    n = len(labels)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y, x = y[None], x[None]

    def draw(low, high):
        return rng.uniform(low, high, (n, 1, 1)).astype(np.float32)

    phase, period = draw(0, 2 * np.pi), draw(6, 9)
    cy, cx, radius = draw(8, size - 8), draw(8, size - 8), draw(5, 9)
    wave = {
        "rows": np.sin(2 * np.pi * y / period + phase),
        "columns": np.sin(2 * np.pi * x / period + phase),
        "rising": np.sin(2 * np.pi * (x + y) / (period * np.sqrt(2)) + phase),
        "falling": np.sin(2 * np.pi * (x - y) / (period * np.sqrt(2)) + phase),
        "checks": np.sign(np.sin(2 * np.pi * x / period + phase) * np.sin(2 * np.pi * y / period + phase)),
        "dots": np.clip(4 * np.sin(2 * np.pi * x / period + phase) * np.sin(2 * np.pi * y / period + phase) - 3, -1, 1),
        "rings": np.sin(2 * np.pi * np.hypot(x - cx, y - cy) / period + phase),
        "disk": np.where(np.hypot(x - cx, y - cy) < radius, 1.0, -1.0),
        "cross": np.where((np.abs(x - cx) < radius / 3) | (np.abs(y - cy) < radius / 3), 1.0, -1.0),
        "speckle": np.sign(rng.standard_normal((n, size, size))),
    }
    pattern = np.stack([wave[c] * np.ones((n, size, size), np.float32) for c in CLASSES])[labels, np.arange(n)]
    ramp = draw(-0.3, 0.3) * (x - size / 2) / size + draw(-0.3, 0.3) * (y - size / 2) / size
    image = draw(0.3, 0.7) + draw(0.12, 0.3) * pattern + ramp + 0.06 * rng.standard_normal((n, size, size))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def make_store(path: Path, per_class: int, size: int = SIZE, seed: int = 0) -> ImageStore:
    """``per_class`` training and ``per_class // 2`` test images of every class, one domain."""
    if (path / "store.json").is_file():
        return ImageStore.open(path)
    rng = np.random.default_rng(seed)
    n_train, n_test = per_class * len(CLASSES), per_class // 2 * len(CLASSES)
    labels = np.concatenate([np.arange(n_train), np.arange(n_test)]) % len(CLASSES)
    n = len(labels)
    meta = pd.DataFrame(
        {
            "index": np.arange(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": ["train"] * n_train + ["test"] * n_test,
            "domain": 0,
            "label": labels,
        }
    )
    return write_store(path, textures(labels, rng, size), meta, ["only"], CLASSES)


def config(method: str, store: Path, seed: int, epochs: int, overrides: list[str]) -> PretrainConfig:
    """cfcl's shipped defaults for small data at batch 32 (four times the steps of the default 128);
    DINO without local crops (``--set dino.n_local=4`` adds them: 16 px, half the image, as the
    default 32 px are for 64-px images; they cost 2.5 times the time)."""
    base = {
        "method": method,
        "data": str(store),
        "seed": seed,
        "batch_size": 32,
        "trainer": {"max_epochs": epochs, "progress_bar": False, "accelerator": "cpu", "log_every_n_steps": 5},
    }
    if method == "dino":
        base["dino"] = {"n_local": 0, "local_size": LOCAL_SIZE}
    return build_config(PretrainConfig, base=base, overrides=overrides)


def probe_accuracy(features: np.ndarray, store: ImageStore, fraction: float, seed: int) -> float:
    """Balanced accuracy on the test split of cfcl's linear probe fitted on ``fraction`` of the training labels."""
    labels = store.meta["label"].to_numpy()
    rows = labelled_subset(store.meta, store.indices("train"), fraction, seed)
    test = store.indices("test")
    probe = fit_probe(features[rows], labels[rows], seed=seed)
    return balanced_accuracy(labels[test], probe.predict(features[test]))


def random_encoder(config: PretrainConfig) -> torch.nn.Module:
    """The untrained encoder of ``config``'s architecture, drawn from its seed."""
    torch.manual_seed(config.seed)
    return build_encoder(config.encoder.arch, **config.encoder.arch_kwargs)


def train_reference(config: PretrainConfig) -> torch.nn.Module:
    """lightly's DINO example's training step on cfcl's views, encoder and DINO settings; returns the teacher's encoder.

    As the example: a teacher head drawn independently of the student's, the EMA step before the
    forward passes, each view through the networks on its own, lightly's ``DINOLoss`` (centre
    updated inside it), the prototypes frozen for the first epoch, Adam without weight decay.
    """
    torch.manual_seed(config.seed)
    dino, epochs = config.dino, config.trainer.max_epochs
    data = open_pretrain_data("dino", config.data, None)
    batches = ViewBatches(data, "dino", config.batch_size, config.seed, config.p_replace, config.p_cf, 1, dino.n_local)
    steps, augment = batches.batches_per_epoch(1), config.augment.resolve()
    global_views = build_augment(augment.model_copy(update={"crop_scale": dino.global_scale}), data.image_size)
    local_views = build_augment(augment.model_copy(update={"crop_scale": dino.local_scale}), (dino.local_size,) * 2)
    student = build_encoder(config.encoder.arch, **config.encoder.arch_kwargs)
    head_sizes = (student.feature_dim, dino.head_hidden, dino.head_bottleneck, dino.prototypes, dino.head_batch_norm)
    head = DINOProjectionHead(*head_sizes, freeze_last_layer=1)
    teacher, teacher_head = copy.deepcopy(student), DINOProjectionHead(*head_sizes)
    deactivate_requires_grad(teacher), deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(
        dino.prototypes,
        warmup_teacher_temp=dino.teacher_temp[0],
        teacher_temp=dino.teacher_temp[1],
        warmup_teacher_temp_epochs=round(dino.teacher_temp_warmup_epochs),
        student_temp=dino.student_temp,
        center_momentum=dino.center_momentum,
    )
    optimizer = torch.optim.Adam([*student.parameters(), *head.parameters()], lr=config.lr)
    for epoch in range(epochs):
        for index in range(steps):
            momentum = cosine_schedule(epoch * steps + index, epochs * steps, *dino.teacher_momentum)
            update_momentum(student, teacher, momentum)
            update_momentum(head, teacher_head, momentum)
            batch = batches[(epoch, index, 0, 1)]
            x, b = batch["views"].float() / 255, len(batch["labels"])
            views = [(global_views if v < 2 else local_views)(x[v * b : (v + 1) * b]) for v in range(2 + dino.n_local)]
            with torch.no_grad():
                targets = [teacher_head(teacher(view)) for view in views[:2]]
            loss = criterion(targets, [head(student(view)) for view in views], epoch=epoch)
            optimizer.zero_grad()
            loss.backward()
            head.cancel_last_layer_gradients(epoch)
            optimizer.step()
        print(f"lightly-dino epoch {epoch}: loss {loss.item():.3f}", flush=True)
    return teacher.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=["simclr", "dino"])
    parser.add_argument("--reference", action="store_true", help="also lightly's DINO training step on the same views")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="pretrain config override (all methods)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = make_store(args.out / "data", args.per_class)
    rows = []
    for seed in args.seeds:
        random = random_encoder(config("dino", store.path, seed, args.epochs, args.overrides))
        accuracy = {"random": probe_accuracy(embed(random, store), store, args.fraction, seed)}
        seconds = {}
        for method in args.methods:
            out = args.out / f"{method}-s{seed}"
            started = time.time()
            pretrain.run(config(method, store.path, seed, args.epochs, args.overrides), out)
            seconds[method] = time.time() - started
            accuracy[method] = probe_accuracy(embed(load_encoder(out), store), store, args.fraction, seed)
        if args.reference:
            started = time.time()
            encoder = train_reference(config("dino", store.path, seed, args.epochs, args.overrides))
            seconds["lightly-dino"] = time.time() - started
            accuracy["lightly-dino"] = probe_accuracy(embed(encoder, store), store, args.fraction, seed)
        for method, value in accuracy.items():
            row = {
                "seed": seed,
                "method": method,
                "accuracy": round(value, 4),
                "gain": round(value - accuracy["random"], 4),
                "seconds": round(seconds.get(method, 0.0), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print("\n| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean gain over random |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for method, group in table.groupby("method", sort=False):
        cells = " | ".join(f"{a:.3f} ({g:+.3f})" for a, g in zip(group["accuracy"], group["gain"]))
        print(f"| {method} | {cells} | {group['gain'].mean():+.3f} |")


if __name__ == "__main__":
    main()
