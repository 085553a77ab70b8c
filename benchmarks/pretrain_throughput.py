"""Pretraining throughput (views/s): cfcl's pipeline vs the bare encoder and a lightly-style pipeline.

Three measurements on the same encoder, batch and image size, in one run:
- ``bare``: encoder forward + backward on a random batch already on the device (the ceiling);
- ``cfcl``: ``cfcl pretrain``'s real loop (Lightning, uint8 store batches, device augmentations,
  projection head, NT-Xent, optimizer);
- ``lightly_style``: per-sample PIL/torchvision transforms in DataLoader workers, then the same
  model, loss and optimizer in a plain loop.
Targets: cfcl >= 0.85 x bare and >= 1.5 x lightly_style. Prints one JSON line.

Fairness: both sides apply the same augmentation preset (``--presets``, default ``chest`` and
``demo``), op for op, in the same order and with the same per-sample probabilities and ranges.
The lightly-style side uses torchvision's PIL ops: RandomResizedCrop, rotate, flips,
ColorJitter(brightness, contrast), adjust_gamma, adjust_brightness for the multiplicative
contrast factor (the same ``clamp(f * x)``), gaussian_blur, adjust_sharpness with a factor drawn
per sample, then on the tensor Gaussian noise and RandomErasing. ``chest`` (the reference
study's recipe) and ``demo`` are pure standard torchvision; ``acquisition`` adds gamma, blur and noise. Each
preset's row also gives ``augment_ms``: cfcl's device augmentation alone, ms per batch of
views (less sensitive to a busy machine than the end-to-end numbers), and
``cfcl_over_bare_by_clock``: the same ratio from process CPU time per step, which a busy machine
barely moves when ``OMP_NUM_THREADS=1`` (on CUDA: wall time). ``--breakdown`` adds ``step_ms``:
each part of a step timed alone (data, uint8 to float, augmentation, encoder, head and loss,
finite-gradient check, optimizer) and the rest of the real loop's step, Lightning's share.

``--dino``: the DINO loop (student and EMA teacher, global and local crops) against the bare
encoder work of a DINO step: forward + backward over the same views and a forward over the
global views for the teacher (no per-sample pipeline or breakdown here).

CPU default: the demo encoder on 64 px images; ``--arch resnet18`` (or 34/50) shows the overhead
where the encoder dominates. ``--cuda``: ResNet-50, 224 px, batch 256, AMP, channels-last, the
``chest`` preset. ``--data STORE`` uses a real store (its ``train`` split); otherwise a random one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from cfcl.config import build_config, read_yaml
from cfcl.contrastive.augment import PRESETS, AugmentParams
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.data import ViewBatches, open_pretrain_data
from cfcl.contrastive.encoders import ARCHS
from cfcl.contrastive.losses import nt_xent
from cfcl.contrastive.methods import METHODS
from cfcl.contrastive.module import non_finite_gradients
from cfcl.contrastive.pretrain import build_dino_module, build_module
from cfcl.data.store import ImageStore, write_store
from cfcl.loaders import step_loader
from cfcl.presets import resolve_config_path
from cfcl.training import loader_workers, make_trainer


def random_store(path: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame(
        {
            "index": range(n),
            "image_id": [f"r{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": "train",
            "domain": rng.integers(0, 2, n),
            "label": rng.integers(0, 2, n),
        }
    )
    write_store(path, rng.integers(0, 256, (n, size, size), dtype=np.uint8), meta, ["a", "b"], ["n", "y"])
    return path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def view_shapes(config: PretrainConfig, size: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """``(number, (H, W))`` of the views the student encodes per step: two per image for the SimCLR
    family; two global views and ``dino.n_local`` local crops per image for the DINO family."""
    b = config.batch_size
    if config.dino is None:
        return [(2 * b, size)]
    global_size = (config.dino.global_size,) * 2 if config.dino.global_size else size
    return [(2 * b, global_size), (config.dino.n_local * b, (config.dino.local_size,) * 2)]


def bare(
    config: PretrainConfig, size: tuple[int, int], device: torch.device, steps: int, warmup: int
) -> tuple[float, float]:
    """Views/s of the encoder work alone: forward + backward over the step's views (for the DINO
    family also the teacher's forward over the global views), and its :func:`clock` ms per step."""
    module = build_module(config, size, 2).to(device)
    batches = [torch.rand(n, 1, *shape, device=device) for n, shape in view_shapes(config, size) if n]
    if config.channels_last:
        batches = [x.contiguous(memory_format=torch.channels_last) for x in batches]
    amp = device.type == "cuda"
    for i in range(warmup + steps):
        if i == warmup:
            start_clock, start = clock(device), time.perf_counter()
        for x in batches:
            with autocast(device, amp):
                features = module.encoder(x)
            features.float().sum().backward()
        if config.dino is not None:
            with torch.no_grad(), autocast(device, amp):
                module.encoder(batches[0])
    stop_clock = clock(device)
    views = sum(len(x) for x in batches)
    return views * steps / (time.perf_counter() - start), 1000 * (stop_clock - start_clock) / steps


def clock(device: torch.device) -> float:
    """Seconds of this process' CPU time on the CPU (robust on a busy machine with 1 thread), else wall time."""
    synchronize(device)
    return time.process_time() if device.type == "cpu" else time.perf_counter()


class StepTimer:
    """Lightning callback: wall time (and :func:`clock` time) of the steps after ``warmup``."""

    def __init__(self, warmup: int, steps: int):
        import lightning as L

        timer = self

        class Callback(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.global_step == warmup:
                    timer.start_clock = clock(module.device)
                    timer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, *args):
                if trainer.global_step == warmup + steps:
                    timer.stop_clock = clock(module.device)
                    timer.stop = time.perf_counter()

        self.callback = Callback()


def cfcl_pipeline(
    config: PretrainConfig, out: Path, steps: int, warmup: int, callbacks: tuple = (), **trainer_overrides
) -> tuple[float, float]:
    """Views/s of the real loop (SimCLR or DINO family, as ``config.method``), and its :func:`clock` ms per
    step; ``callbacks`` and ``trainer_overrides`` (e.g. ``deterministic``) go to the Lightning ``Trainer``."""
    data = open_pretrain_data(config.method, config.data, None, config.split)
    timer = StepTimer(warmup, steps)
    trainer = make_trainer(
        config.trainer,
        out,
        callbacks=[timer.callback, *callbacks],
        use_distributed_sampler=False,
        max_steps=warmup + steps,
        max_epochs=-1,
        logger=False,
        **trainer_overrides,
    )
    n_local = config.dino.n_local if config.dino is not None else 0
    batches = ViewBatches(data, config.method, config.batch_size, config.seed, 0.5, 1.0, 1, n_local)
    if METHODS[config.method].family == "dino":
        module = build_dino_module(config, data, batches.batches_per_epoch(1))
    else:
        module = build_module(config, data.image_size, len(data.data.labels))
    loader = step_loader(
        batches, lambda: (trainer.global_step, 0, 1), loader_workers(config.trainer), torch.cuda.is_available()
    )
    trainer.fit(module, loader)
    views = sum(n for n, _ in view_shapes(config, data.image_size))
    return views * steps / (timer.stop - timer.start), 1000 * (timer.stop_clock - timer.start_clock) / steps


def step_breakdown(config: PretrainConfig, device: torch.device, loop_ms: float, repeats: int = 5) -> dict[str, float]:
    """:func:`clock` ms of each part of one cfcl step timed alone; the rest of ``loop_ms`` is Lightning's share."""
    data = open_pretrain_data(config.method, config.data, None, config.split)
    module = build_module(config, data.image_size, len(data.data.labels)).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, fused=True)
    batches = ViewBatches(data, config.method, config.batch_size, config.seed, 0.5, 1.0, 1)
    batch = {k: v.to(device) for k, v in batches[(0, 0, 0, 1)].items()}
    x = module.augment(batch["views"].float().div_(255.0))
    features = module.encoder(x).detach().requires_grad_()

    def encoder_step():
        with autocast(device, device.type == "cuda"):
            out = module.encoder(x)
        out.float().sum().backward()

    def head_and_loss():
        nt_xent(module.head(features), batch["groups"], config.temperature).backward()

    parts = {
        "data": lambda: batches[(0, 1, 0, 1)],
        "to_float": lambda: batch["views"].float().div_(255.0),
        "augment": lambda: module.augment(x),
        "encoder_forward_backward": encoder_step,
        "head_and_loss": head_and_loss,
        "finite_check": lambda: non_finite_gradients(module.parameters(), device),
        "optimizer": optimizer.step,
    }
    times = {}
    for name, part in parts.items():
        part()
        samples = []
        for _ in range(repeats):
            start = clock(device)
            part()
            samples.append(1000 * (clock(device) - start))
        times[name] = round(float(np.median(samples)), 1)
    return {**times, "loop": round(loop_ms, 1), "lightning_and_rest": round(loop_ms - sum(times.values()), 1)}


class TorchvisionAugment:
    """One sample's view with torchvision's PIL ops: the preset's ops in cfcl's order (see the module docstring)."""

    def __init__(self, params: AugmentParams, size: tuple[int, int]):
        self.params, self.size = params, size
        self.crop = T.RandomResizedCrop(size, scale=params.crop_scale, ratio=params.crop_ratio)
        self.color = T.ColorJitter(params.brightness, params.contrast)
        self.erase = T.RandomErasing(p=1.0, scale=params.erasing_scale)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        p = self.params
        image = self.crop(image)
        if random.random() < p.rotation_p:
            image = TF.rotate(image, random.uniform(-p.rotation, p.rotation), T.InterpolationMode.BILINEAR)
        if random.random() < p.hflip_p:
            image = TF.hflip(image)
        if random.random() < p.vflip_p:
            image = TF.vflip(image)
        if random.random() < p.color_p:
            image = self.color(image)
        if random.random() < p.gamma_p:
            image = TF.adjust_gamma(image, random.uniform(*p.gamma), random.uniform(*p.gamma_gain))
        if random.random() < p.contrast_factor_p:
            image = TF.adjust_brightness(image, random.uniform(*p.contrast_factor))
        if random.random() < p.blur_p:
            image = TF.gaussian_blur(image, [p.blur_kernel] * 2, [random.uniform(*p.blur_sigma)] * 2)
        if random.random() < p.sharpness_p:
            image = TF.adjust_sharpness(image, random.uniform(*p.sharpness))
        x = TF.to_tensor(image)
        if p.noise_std > 0 and random.random() < p.noise_p:
            x = x + p.noise_std * torch.randn_like(x)
        if random.random() < p.erasing_p:
            x = self.erase(x)
        return x


class PILViews(torch.utils.data.Dataset):
    """Lightly-style: each item decoded to PIL and transformed twice, per sample, in a worker."""

    def __init__(self, store: Path, params: AugmentParams, size: tuple[int, int]):
        self.store = ImageStore.open(store)
        self.rows = self.store.indices("train")
        self.transform = TorchvisionAugment(params, size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        image = Image.fromarray(np.asarray(self.store.images[self.rows[i]]))
        return self.transform(image), self.transform(image)


def augment_ms(config: PretrainConfig, size: tuple[int, int], device: torch.device, repeats: int = 7) -> float:
    """cfcl's device augmentation alone: median ms per batch of ``2 * batch_size`` views."""
    augment = build_module(config, size, 2).augment
    x = torch.rand(2 * config.batch_size, 1, *size, device=device)
    times = []
    for _ in range(repeats + 2):
        synchronize(device)
        start = time.perf_counter()
        augment(x)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[2:]))


def lightly_style(
    config: PretrainConfig, size: tuple[int, int], device: torch.device, steps: int, warmup: int, workers: int
) -> float:
    module = build_module(config, size, 2).to(device)
    params = list(module.encoder.parameters()) + list(module.head.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr, fused=True)  # as cfcl's module
    dataset = PILViews(config.data, config.augment.resolve(), size)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    amp, done = device.type == "cuda", 0
    groups = torch.arange(config.batch_size, device=device).repeat(2)
    while done < warmup + steps:
        for x0, x1 in loader:
            if done == warmup:
                synchronize(device)
                start = time.perf_counter()
            x = torch.cat([x0, x1]).to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                loss = nt_xent(module.head(module.encoder(x)), groups, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                break
    synchronize(device)
    return 2 * config.batch_size * steps / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cuda", action="store_true", help="ResNet-50, 224 px, batch 256, AMP, channels-last on a CUDA GPU"
    )
    parser.add_argument("--arch", choices=ARCHS, help="encoder (default: small on CPU, resnet50 with --cuda)")
    parser.add_argument(
        "--dino", action="store_true", help="the DINO loop (method dino, the run preset's crops) instead of SimCLR"
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        choices=sorted(PRESETS),
        help="augmentation presets (default: chest demo; chest on CUDA)",
    )
    parser.add_argument("--data", type=Path, help="image store (train split); default: random images")
    parser.add_argument("--size", type=int, default=None, help="side of the random images (default 64 on CPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (both pipelines)")
    parser.add_argument("--breakdown", action="store_true", help="also time each part of a step alone (step_ms)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="pretrain config override")
    return parser.parse_args()


def dino_base(cuda: bool) -> dict:
    """``--dino``: the reference settings (``pretrain_padchest_dino``: ViT-B/16, 224 px, 2 global and
    8 local 96-px crops, 65,536 prototypes, iBOT) on CUDA; the benchmark's small ViT on the CPU."""
    if cuda:
        base = read_yaml(resolve_config_path("pretrain_padchest_dino"))
        base["trainer"] = {"accelerator": "gpu", "precision": "bf16-mixed"}
    else:
        base = {"encoder": {"arch": "vit"}, "trainer": {"accelerator": "cpu"}}
    return {**base, "method": "dino"}


def main() -> None:
    args = parse_args()
    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--cuda needs a CUDA GPU")
        device, size, batch, steps, warmup, arch = torch.device("cuda"), 224, 256, 30, 10, "resnet50"
        torch.backends.cudnn.benchmark = True
        base = {
            "projection": [1024, 128],
            "channels_last": True,
            "trainer": {"accelerator": "gpu", "precision": "bf16-mixed"},
        }
        workers, presets = min(8, os.cpu_count() or 1), ["chest"]
    else:
        device, size, batch, steps, warmup, arch = torch.device("cpu"), 64, 128, 8, 2, "small"
        base = {"trainer": {"accelerator": "cpu"}}
        workers, presets = 2, ["chest", "demo"]
    if args.dino:
        base, batch = dino_base(args.cuda), 60 if args.cuda else batch
        arch = base["encoder"]["arch"]
    arch = args.arch or arch
    if arch != base.get("encoder", {}).get("arch", "small"):
        base["encoder"] = {"arch": arch}
    size, batch, presets = args.size or size, args.batch_size or batch, args.presets or presets
    steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
    workers = args.workers if args.workers is not None else workers
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or random_store(Path(tmp) / "store", batch * (steps + warmup + 2), size)
        base.update(data=str(data), batch_size=batch, online_probe=False)
        base["trainer"].update(progress_bar=False, num_workers=0 if device.type == "cpu" else workers)
        image_size = ImageStore.open(data).size
        torch.manual_seed(0)
        config = build_config(PretrainConfig, overrides=args.overrides, base=base)
        result_bare, bare_ms = bare(config, image_size, device, steps, warmup)
        for preset in presets:
            config = build_config(
                PretrainConfig, overrides=args.overrides, base={**base, "augment": {"preset": preset}}
            )
            result_cfcl, loop_ms = cfcl_pipeline(config, Path(tmp) / f"run_{preset}", steps, warmup)
            rows[preset] = {
                "cfcl_views_per_s": round(result_cfcl, 1),
                "cfcl_over_bare": round(result_cfcl / result_bare, 3),
                "cfcl_over_bare_by_clock": round(bare_ms / loop_ms, 3),
                "augment_ms": round(augment_ms(config, image_size, device), 1),
            }
            if not args.dino:  # the per-sample pipeline and the step breakdown are the SimCLR loop's
                result_lightly = lightly_style(config, image_size, device, steps, warmup, workers)
                rows[preset].update(
                    lightly_style_views_per_s=round(result_lightly, 1),
                    cfcl_over_lightly_style=round(result_cfcl / result_lightly, 3),
                )
                if args.breakdown:
                    rows[preset]["step_ms"] = step_breakdown(config, device, loop_ms)
    print(
        json.dumps(
            {
                "benchmark": "pretrain_throughput",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg()[0],
                "method": config.method,
                "encoder": config.encoder.arch,
                "image_size": list(image_size),
                "batch_size": batch,
                "views_per_step": sum(n for n, _ in view_shapes(config, image_size)),
                "steps": steps,
                "lightly_style_workers": workers,
                "bare_views_per_s": round(result_bare, 1),
                **rows,
                "targets": {"cfcl_over_bare": 0.85, "cfcl_over_lightly_style": 1.5},
            }
        )
    )


if __name__ == "__main__":
    main()
