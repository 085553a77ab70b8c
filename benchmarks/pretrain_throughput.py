"""Pretraining throughput (views/s): cfcl's pipeline vs the bare encoder and a lightly-style pipeline.

Three measurements on the same encoder, batch and image size, in one run:
- ``bare``: encoder forward + backward on a random batch already on the device (the ceiling);
- ``cfcl``: ``cfcl pretrain``'s real loop (Lightning, uint8 store batches, device augmentations,
  projection head, NT-Xent, optimizer);
- ``lightly_style``: per-sample PIL/torchvision transforms in DataLoader workers, then the same
  model, loss and optimizer in a plain loop.
Targets: cfcl >= 0.85 x bare and >= 1.5 x lightly_style. Prints one JSON line.

CPU default: the demo encoder on 64 px images. ``--cuda``: ResNet-50, 224 px, batch 256, AMP,
channels-last. ``--data STORE`` uses a real store (its ``train`` split); otherwise a random one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision import transforms as T

from cfcl.config import build_config
from cfcl.contrastive.augment import AugmentParams
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.data import ViewBatches, make_loader, open_pretrain_data
from cfcl.contrastive.losses import nt_xent
from cfcl.contrastive.pretrain import build_module
from cfcl.data.store import ImageStore, write_store
from cfcl.training import make_trainer


def random_store(path: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({
        "index": range(n), "image_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
        "split": "train", "domain": rng.integers(0, 2, n), "label": rng.integers(0, 2, n),
    })
    write_store(path, rng.integers(0, 256, (n, size, size), dtype=np.uint8), meta, ["a", "b"], ["n", "y"])
    return path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def bare(config: PretrainConfig, size: tuple[int, int], device: torch.device, steps: int, warmup: int) -> float:
    module = build_module(config, size, 2).to(device)
    views = 2 * config.batch_size
    x = torch.rand(views, 1, *size, device=device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = device.type == "cuda"
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast(device, amp):
            features = module.encoder(x)
        features.float().sum().backward()
    synchronize(device)
    return views * steps / (time.perf_counter() - start)


class StepTimer:
    """Lightning callback: wall time of the steps after ``warmup``."""

    def __init__(self, warmup: int, steps: int):
        import lightning as L

        timer = self

        class Callback(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.global_step == warmup:
                    synchronize(module.device)
                    timer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, *args):
                if trainer.global_step == warmup + steps:
                    synchronize(module.device)
                    timer.stop = time.perf_counter()

        self.callback = Callback()


def cfcl_pipeline(config: PretrainConfig, out: Path, steps: int, warmup: int) -> float:
    data = open_pretrain_data(config.method, config.data, None, config.split)
    module = build_module(config, data.image_size, len(data.data.labels))
    timer = StepTimer(warmup, steps)
    trainer = make_trainer(config.trainer, out, callbacks=[timer.callback], use_distributed_sampler=False,
                           max_steps=warmup + steps, max_epochs=-1, logger=False)
    batches = ViewBatches(data, config.method, config.batch_size, config.seed, 0.5, 1.0, 1)
    loader = make_loader(batches, lambda: (trainer.global_step, 0, 1), config.trainer.num_workers, torch.cuda.is_available())
    trainer.fit(module, loader)
    return 2 * config.batch_size * steps / (timer.stop - timer.start)


class PILViews(torch.utils.data.Dataset):
    """Lightly-style: each item decoded to PIL and transformed twice, per sample, in a worker.

    The preset's ops that torchvision has (crop, rotation, flips, colour jitter, blur, sharpness,
    erasing); gamma, multiplicative contrast and noise have no PIL transform and are left out,
    which only favours this baseline.
    """

    def __init__(self, store: Path, params: AugmentParams, size: tuple[int, int]):
        self.store = ImageStore.open(store)
        self.rows = self.store.indices("train")
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=params.crop_scale, ratio=params.crop_ratio),
            T.RandomRotation(params.rotation),
            T.RandomHorizontalFlip(params.hflip_p),
            T.RandomVerticalFlip(params.vflip_p),
            T.RandomApply([T.ColorJitter(params.brightness, params.contrast)], p=params.color_p),
            T.RandomAdjustSharpness(params.sharpness[1], p=params.sharpness_p),
            T.RandomApply([T.GaussianBlur(params.blur_kernel, params.blur_sigma)], p=params.blur_p),
            T.ToTensor(),
            T.RandomErasing(p=params.erasing_p, scale=params.erasing_scale),
        ])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        image = Image.fromarray(np.asarray(self.store.images[self.rows[i]]))
        return self.transform(image), self.transform(image)


def lightly_style(config: PretrainConfig, size: tuple[int, int], device: torch.device, steps: int, warmup: int, workers: int) -> float:
    module = build_module(config, size, 2).to(device)
    optimizer = torch.optim.Adam(list(module.encoder.parameters()) + list(module.head.parameters()), lr=config.lr)
    dataset = PILViews(config.data, config.augment.resolve(), size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="ResNet-50, 224 px, batch 256, AMP, channels-last on a CUDA GPU")
    parser.add_argument("--data", type=Path, help="image store (train split); default: random images")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (both pipelines)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="pretrain config override")
    args = parser.parse_args()

    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--cuda needs a CUDA GPU")
        device, size, batch, steps, warmup = torch.device("cuda"), 224, 256, 30, 10
        torch.backends.cudnn.benchmark = True
        base = {"encoder": {"arch": "resnet50", "arch_kwargs": {}}, "projection": [1024, 128], "channels_last": True,
                "augment": {"preset": "chest"}, "trainer": {"accelerator": "gpu", "precision": "bf16-mixed"}}
        workers = min(8, os.cpu_count() or 1)
    else:
        device, size, batch, steps, warmup = torch.device("cpu"), 64, 128, 8, 2
        base = {"trainer": {"accelerator": "cpu"}}
        workers = 2
    batch = args.batch_size or batch
    steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
    workers = args.workers if args.workers is not None else workers
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or random_store(Path(tmp) / "store", batch * (steps + warmup + 2), size)
        base.update(data=str(data), batch_size=batch, online_probe=False)
        base["trainer"].update(progress_bar=False, num_workers=0 if device.type == "cpu" else workers)
        config = build_config(PretrainConfig, overrides=args.overrides, base=base)
        image_size = ImageStore.open(data).size
        torch.manual_seed(0)
        result_bare = bare(config, image_size, device, steps, warmup)
        result_cfcl = cfcl_pipeline(config, Path(tmp) / "run", steps, warmup)
        result_lightly = lightly_style(config, image_size, device, steps, warmup, workers)
    print(json.dumps({
        "benchmark": "pretrain_throughput", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "encoder": config.encoder.arch,
        "image_size": list(image_size), "batch_size": batch, "views_per_step": 2 * batch, "steps": steps,
        "lightly_style_workers": workers, "bare_views_per_s": round(result_bare, 1),
        "cfcl_views_per_s": round(result_cfcl, 1), "lightly_style_views_per_s": round(result_lightly, 1),
        "cfcl_over_bare": round(result_cfcl / result_bare, 3), "cfcl_over_lightly_style": round(result_cfcl / result_lightly, 3),
        "targets": {"cfcl_over_bare": 0.85, "cfcl_over_lightly_style": 1.5},
    }))


if __name__ == "__main__":
    main()
