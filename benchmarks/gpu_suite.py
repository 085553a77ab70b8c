"""The GPU suite: every figure of cfcl's GPU path in one run, one JSON line per figure.

Figures (docs/performance.md, "The GPU suite"), each printed as soon as it is measured:
- pretraining views/s: cfcl's real loop, the bare encoder's forward + backward measured the same
  way (compiled if ``--compile`` compiles cfcl's), the per-sample PIL pipeline, and the two ratios
  (targets >= 0.85x bare, >= 1.5x PIL): ResNet-50, 224 px, batch 256, bf16, channels-last, ``chest``
  (the functions of ``pretrain_throughput.py``);
- the ViT path: cfcl's DINO loop with the reference settings (ViT-B/16 at 224 px, batch 60, 2 global
  and 8 local 96-px crops, iBOT) against the bare encoder work of the step (forward + backward over
  the same views, the teacher's forward over the global views);
- both loops again with the trainer's ``deterministic`` off (cuDNN's autotuner on, the fastest
  kernels): how much of the gap to the bare encoder is the price of run-to-run determinism;
- with ``--profile-dir DIR``: PyTorch profiler tables (top operators by device time) of a few steps
  of cfcl's DINO loop and of its ResNet loop, written to ``DIR``, to show where the rest goes;
- the ``cf_train_224`` generator in cfcl's Lightning loop, bf16: training images/s at batch 16 as
  shipped, then at the chosen batch (``--cf-batch``, default 64) with the levers off and, beside,
  on (``LEVERS``: compiled, channels-last, fused AdamW, learning rate and warm-up scaled linearly from
  the preset's batch), the rate of skipped updates over the levers' run, peak GPU memory at batch 16 and
  the largest power-of-two batch whose step fits in 80 GB;
- counterfactual generation images/s at 224 px (``cf_generate`` batch);
- an estimate from the rates above: hours to train the generator (at the chosen batch, levers on),
  write its counterfactual store and pretrain one ResNet-50 encoder (cfcl's loop as the trainer sets
  it) for ``--images`` training images on ``--gpus`` GPUs (``training_hours``);
- the wall time of ``cfcl demo`` (only when ``--only`` names ``demo``).

Random images unless ``--data STORE`` (a 224-px image store). The default parts (pretrain, vit,
generator) are meant to fit in 8 minutes on one H100; ``--quick`` (fewer steps, no batch search) in
under 3; ``--only PART ...`` measures some parts alone. Without a CUDA GPU it stops with a one-line
message, unless ``--device cpu --tiny``: the same figures at toy sizes (not compiled), to test the
script on a CPU.

Usage: python benchmarks/gpu_suite.py [--quick] [--compile] [--data STORE] [--only PART ...] [--profile-dir DIR]
       [--cf-batch B] [--images N] [--gpus G]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import demo_time
import numpy as np
import pretrain_throughput as throughput
import torch

from cfcl.config import build_config
from cfcl.contrastive.config import PretrainConfig
from cfcl.counterfactual.config import CFGenerateConfig, CFTrainConfig
from cfcl.counterfactual.data import ParentImageDataset, training_batches
from cfcl.counterfactual.generate_store import counterfactual_rows, generate_chunk
from cfcl.counterfactual.generator.losses import elbo_terms
from cfcl.counterfactual.generator.module import HVAETrainModule
from cfcl.counterfactual.generator.train import training_module
from cfcl.counterfactual.parents import parent_specs
from cfcl.data.store import ImageStore
from cfcl.loaders import step_loader, trainer_progress
from cfcl.presets import resolve_config_path
from cfcl.training import loader_workers, make_trainer

PARTS = ("pretrain", "vit", "generator", "demo")  # --only: the suite's parts, in the order they run
DEFAULT_PARTS = ("pretrain", "vit", "generator")  # the demo (3 min more) only when named
GPU_MEMORY_CAP_GB = 80.0  # "fits": within an 80 GB GPU, whatever this one has
DEFAULT_TRAIN_IMAGES = 60_000  # PadChest's training split, an assumption: pass the train split of your prepared store
#: The generator's speed levers (all off in the presets), as ``cf train`` settings.
LEVERS = ["trainer.compile=true", "trainer.channels_last=true", "optim.implementation=fused", "optim.lr_scaling=linear"]


@dataclass(frozen=True)
class Sizes:
    """Steps and sizes of one suite mode."""

    image: int
    pretrain_batch: int
    pretrain_steps: int
    pretrain_warmup: int
    cf_batch: int
    cf_steps: int
    cf_warmup: int
    cf_chosen_batch: int
    cf_levers_off_steps: int
    cf_levers_steps: int
    cf_levers_warmup: int
    generate_rows: int
    batch_search: bool
    demo: bool


FULL = Sizes(224, 256, 30, 10, 16, 60, 10, 64, 20, 60, 10, 4096, True, True)
QUICK = Sizes(224, 256, 12, 5, 16, 20, 5, 64, 8, 20, 5, 1024, False, False)
TINY = Sizes(16, 8, 2, 1, 4, 4, 1, 8, 2, 4, 1, 24, False, False)


def fastest_kernels() -> None:
    """The bare loops' setting: cuDNN's autotuner on, non-deterministic kernels allowed (a Lightning
    trainer built earlier in the suite may have switched both off for the whole process)."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True


class ProfileSteps:
    """Lightning callback: PyTorch's profiler over steps ``start`` to ``start + n``; writes the top
    operators by self time (device time on a GPU) to ``path``."""

    def __init__(self, path: Path, start: int, n: int):
        import lightning as L

        outer = self

        class Callback(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.global_step == start:
                    activities = [torch.profiler.ProfilerActivity.CPU]
                    if module.device.type == "cuda":
                        activities.append(torch.profiler.ProfilerActivity.CUDA)
                    outer.profile = torch.profiler.profile(activities=activities)
                    outer.profile.__enter__()

            def on_train_batch_end(self, trainer, module, *args):
                if trainer.global_step == start + n:
                    outer.profile.__exit__(None, None, None)
                    key = "self_device_time_total" if module.device.type == "cuda" else "self_cpu_time_total"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(outer.profile.key_averages().table(sort_by=key, row_limit=40))

        self.callback = Callback()


def autotuned_and_profiled(
    config: PretrainConfig, tmp: Path, steps: int, warmup: int, profile_dir: Path | None, name: str
) -> float:
    """Views/s of cfcl's loop with determinism off; with ``profile_dir``, also a profiler table of 3 steps
    (``profile_dir/NAME.txt``)."""
    autotuned, _ = throughput.cfcl_pipeline(
        config, tmp / f"{name}_autotuned", steps, warmup, deterministic=False, benchmark=True
    )
    if profile_dir is not None:
        profile = ProfileSteps(profile_dir / f"{name}.txt", start=2, n=3)
        throughput.cfcl_pipeline(config, tmp / f"{name}_profiled", 4, 1, callbacks=(profile.callback,))
    return autotuned


def emit(figure: str, value: float | None, unit: str, device: str, **details) -> None:
    print(
        json.dumps({"suite": "gpu_suite", "figure": figure, "value": value, "unit": unit, "device": device, **details}),
        flush=True,
    )


def pretrain_config(sizes: Sizes, data: Path, tiny: bool, compile_encoder: bool, accelerator: str) -> PretrainConfig:
    """ResNet-50 with the reference head, bf16 and channels-last on a GPU; the demo encoder at toy size."""
    base = {
        "data": str(data),
        "batch_size": sizes.pretrain_batch,
        "online_probe": False,
        "compile": compile_encoder,
        "augment": {"preset": "chest"},
        "trainer": {"accelerator": accelerator, "progress_bar": False},
    }
    if tiny:
        base.update(encoder={"arch": "small", "arch_kwargs": {"width": 4, "blocks": [1, 1]}}, projection=[8])
        base["trainer"]["num_workers"] = 0
    else:
        base.update(encoder={"arch": "resnet50", "arch_kwargs": {}}, projection=[1024, 128], channels_last=True)
        base["trainer"]["precision"] = "bf16-mixed"
    return build_config(PretrainConfig, base=base)


def pretraining(
    sizes: Sizes,
    data: Path,
    tmp: Path,
    device: torch.device,
    name: str,
    tiny: bool,
    compile_encoder: bool,
    profile_dir: Path | None,
) -> float:
    """The ResNet figures; returns cfcl's views/s (the rate the estimate needs)."""
    config = pretrain_config(sizes, data, tiny, compile_encoder, device.type)
    size = ImageStore.open(data).size
    steps, warmup = sizes.pretrain_steps, sizes.pretrain_warmup
    setting = {
        "encoder": config.encoder.arch,
        "image_size": size[0],
        "views_per_step": 2 * config.batch_size,
        "compiled": config.compile,
        "steps": steps,
    }
    fastest_kernels()
    bare, _ = throughput.bare(config, size, device, steps, warmup)
    emit("pretrain_bare_views_per_s", round(bare, 1), "views/s", name, **setting)
    cfcl, _ = throughput.cfcl_pipeline(config, tmp / "pretrain", steps, warmup)
    workers = loader_workers(config.trainer)
    emit("pretrain_cfcl_views_per_s", round(cfcl, 1), "views/s", name, **setting, workers=workers)
    fastest_kernels()
    pil = throughput.lightly_style(config, size, device, steps, warmup, workers)
    emit("pretrain_pil_views_per_s", round(pil, 1), "views/s", name, **setting, workers=workers)
    emit("pretrain_cfcl_over_bare", round(cfcl / bare, 3), "ratio", name, **setting, target=0.85, stretch=0.9)
    emit("pretrain_cfcl_over_pil", round(cfcl / pil, 3), "ratio", name, **setting, target=1.5)
    autotuned = autotuned_and_profiled(config, tmp, steps, warmup, profile_dir, "pretrain_resnet")
    emit(
        "pretrain_cfcl_autotuned_over_bare",
        round(autotuned / bare, 3),
        "ratio",
        name,
        **setting,
        views_per_s=round(autotuned, 1),
        deterministic=False,
    )
    return cfcl


def dino_pretraining(
    sizes: Sizes, data: Path, tmp: Path, device: torch.device, name: str, tiny: bool, profile_dir: Path | None
) -> None:
    """The ViT path: cfcl's DINO loop with the reference settings (ViT-B/16, 224 px, batch 60, 2 global
    and 8 local crops, iBOT) against the bare encoder work of the step (forward + backward over the
    same views, the teacher's forward over the global views)."""
    base = throughput.dino_base(cuda=not tiny)
    base.update(data=str(data), online_probe=False, batch_size=sizes.pretrain_batch if tiny else 60)
    base["trainer"].update(accelerator=device.type, progress_bar=False)
    if tiny:
        base.update(
            encoder={
                "arch": "vit",
                "arch_kwargs": {
                    "image_size": sizes.image,
                    "patch_size": 4,
                    "width": 16,
                    "depth": 1,
                    "heads": 2,
                    "mlp_dim": 32,
                },
            },
            dino={"prototypes": 32, "head_hidden": 16, "head_bottleneck": 8, "n_local": 2, "local_size": 8},
        )
        base["trainer"]["num_workers"] = 0
    config = build_config(PretrainConfig, base=base)
    size = ImageStore.open(data).size
    steps, warmup = sizes.pretrain_steps, sizes.pretrain_warmup
    setting = {
        "encoder": config.encoder.arch,
        "method": "dino",
        "steps": steps,
        "views_per_step": sum(n for n, _ in throughput.view_shapes(config, size)),
    }
    fastest_kernels()
    bare, _ = throughput.bare(config, size, device, steps, warmup)
    emit("pretrain_vit_dino_bare_views_per_s", round(bare, 1), "views/s", name, **setting)
    cfcl, _ = throughput.cfcl_pipeline(config, tmp / "pretrain_dino", steps, warmup)
    emit("pretrain_vit_dino_cfcl_views_per_s", round(cfcl, 1), "views/s", name, **setting)
    emit("pretrain_vit_dino_cfcl_over_bare", round(cfcl / bare, 3), "ratio", name, **setting, target=0.85)
    autotuned = autotuned_and_profiled(config, tmp, steps, warmup, profile_dir, "pretrain_vit_dino")
    emit(
        "pretrain_vit_dino_cfcl_autotuned_over_bare",
        round(autotuned / bare, 3),
        "ratio",
        name,
        **setting,
        views_per_s=round(autotuned, 1),
        deterministic=False,
    )


def generator_config(data: Path, batch: int, tiny: bool, accelerator: str, levers: list[str] = ()) -> CFTrainConfig:
    overrides = [
        f"data={data}",
        f"batch_size={batch}",
        "trainer.progress_bar=false",
        f"trainer.accelerator={accelerator}",
        f"trainer.precision={'32-true' if accelerator == 'cpu' else 'bf16-mixed'}",
        "trainer.log_every_n_steps=50",
        *levers,
    ]
    if tiny:
        overrides += [
            "arch.widths=[8, 8, 16]",
            "arch.blocks=[1, 1, 1]",
            "arch.latent_channels=4",
            "arch.stochastic_max_res=8",
            "trainer.num_workers=0",
            "trainer.compile=false",
        ]  # compiling on a CPU takes minutes
    return build_config(CFTrainConfig, resolve_config_path("cf_train_224"), overrides)


def _step_batch(dataset: ParentImageDataset, batch: int, device: torch.device) -> tuple[torch.Tensor, dict]:
    rows = torch.arange(batch) % len(dataset)
    x = dataset.images[rows].to(device).float() / 255.0
    return x, {k: v[rows].to(device) for k, v in dataset.parents.items()}


def peak_memory_gb(
    config: CFTrainConfig, dataset: ParentImageDataset, specs: list, batch: int, device: torch.device
) -> float:
    """Peak GPU memory of one bf16 training step (forward, backward, AdamW) of a fresh generator at ``batch``."""
    module = training_module(config, dataset.images.shape[-1], specs).to(device)
    optimizer = torch.optim.AdamW(module.trainable(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    x, pa = _step_batch(dataset, batch, device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = elbo_terms(module.model, x, pa, config.beta)["loss"]
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def largest_batch(
    config: CFTrainConfig, dataset: ParentImageDataset, specs: list, device: torch.device, start: int
) -> tuple[int, float]:
    """The largest power-of-two multiple of ``start`` whose step fits in 80 GB, and its peak memory."""
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, GPU_MEMORY_CAP_GB / total), device)
    fits, peak, batch = start, 0.0, start
    try:
        while batch <= 4096:
            try:
                peak_here = peak_memory_gb(config, dataset, specs, batch, device)
            except torch.cuda.OutOfMemoryError:
                break
            fits, peak, batch = batch, peak_here, batch * 2
    finally:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    return fits, peak


def training_rate(
    config: CFTrainConfig,
    dataset: ParentImageDataset,
    specs: list,
    steps: int,
    warmup: int,
    out: Path,
    device: torch.device,
) -> tuple[float, HVAETrainModule, float | None]:
    """Training images/s of a fresh generator in cfcl's loop over ``steps`` steps after ``warmup`` (which
    includes compiling), the trained module (``skipped``: its skipped updates) and the peak GPU memory (None on a
    CPU)."""
    torch.manual_seed(0)
    module = training_module(config, dataset.images.shape[-1], specs)
    timer = throughput.StepTimer(warmup, steps)
    trainer = make_trainer(
        config.trainer,
        out,
        callbacks=[timer.callback],
        max_steps=warmup + steps,
        max_epochs=-1,
        logger=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    batches = training_batches(dataset, config.batch_size, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit(module, step_loader(batches, trainer_progress(trainer), loader_workers(config.trainer)))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return config.batch_size * steps / (timer.stop - timer.start), module, peak


def generator(sizes: Sizes, data: Path, tmp: Path, device: torch.device, name: str, tiny: bool) -> dict[str, float]:
    """The ``cf_train_224`` figures; returns the rates the estimate needs."""
    config = generator_config(data, sizes.cf_batch, tiny, device.type)
    store = ImageStore.open(data)
    rows = store.indices(config.splits)
    specs = parent_specs(store, config.parents, rows)
    dataset = ParentImageDataset(store, rows, specs)
    setting = {
        "preset": "cf_train_224",
        "image_size": store.size[0],
        "batch_size": config.batch_size,
        "precision": config.trainer.precision,
    }
    on_gpu = device.type == "cuda"
    emit(
        "cf_train_peak_memory_gb",
        round(peak_memory_gb(config, dataset, specs, config.batch_size, device), 2) if on_gpu else None,
        "GiB",
        name,
        **setting,
        **({} if on_gpu else {"skipped": "CUDA only"}),
    )
    if on_gpu and sizes.batch_search:
        batch, peak = largest_batch(config, dataset, specs, device, config.batch_size)
        emit(
            "cf_train_largest_batch",
            batch,
            "images",
            name,
            **setting,
            peak_memory_gb=round(peak, 2),
            cap_gb=GPU_MEMORY_CAP_GB,
        )
    else:
        emit("cf_train_largest_batch", None, "images", name, **setting, skipped="--quick" if on_gpu else "CUDA only")

    rate, module, _ = training_rate(config, dataset, specs, sizes.cf_steps, sizes.cf_warmup, tmp / "cf_model", device)
    setting["parameters"] = sum(p.numel() for p in module.model.parameters())
    emit(
        "cf_train_images_per_s",
        round(rate, 1),
        "images/s",
        name,
        **setting,
        steps=sizes.cf_steps,
        skipped=int(module.skipped),
    )

    chosen = {**setting, "batch_size": sizes.cf_chosen_batch}
    off = generator_config(data, sizes.cf_chosen_batch, tiny, device.type)
    off_rate, _, off_peak = training_rate(
        off, dataset, specs, sizes.cf_levers_off_steps, 2, tmp / "cf_off", device
    )  # nothing to compile
    emit(
        "cf_train_batch_images_per_s",
        round(off_rate, 1),
        "images/s",
        name,
        **chosen,
        levers=False,
        steps=sizes.cf_levers_off_steps,
        peak_memory_gb=off_peak and round(off_peak, 2),
    )
    on = generator_config(data, sizes.cf_chosen_batch, tiny, device.type, LEVERS)
    steps, warmup = sizes.cf_levers_steps, sizes.cf_levers_warmup
    levers_rate, levers_module, peak = training_rate(on, dataset, specs, steps, warmup, tmp / "cf_levers", device)
    skipped = int(levers_module.skipped)
    levers = {
        "levers": True,
        "compiled": on.trainer.compile,
        "channels_last": on.trainer.channels_last,
        "optimizer": on.optim.implementation,
        "lr_scaling": on.optim.lr_scaling,
    }
    emit(
        "cf_train_batch_levers_images_per_s",
        round(levers_rate, 1),
        "images/s",
        name,
        **chosen,
        **levers,
        steps=steps,
        peak_memory_gb=peak and round(peak, 2),
        over_levers_off=round(levers_rate / off_rate, 3),
        target=200,
    )
    emit(
        "cf_train_skipped_update_rate",
        round(skipped / (warmup + steps), 4),
        "fraction",
        name,
        **chosen,
        **levers,
        steps=warmup + steps,
        skipped=skipped,
        target="no skipped update beyond 1 %",
    )

    model = module.ema_model.eval().to(device)
    generate = build_config(CFGenerateConfig, resolve_config_path("cf_generate"), [f"data={data}", "generator=unused"])
    batch = min(generate.batch_size, sizes.generate_rows)
    targets = list(range(len(store.domains)))
    cf_rows = counterfactual_rows(store, rows, {"domain": targets}, model.specs)
    cf_rows = cf_rows.iloc[np.arange(sizes.generate_rows) % len(cf_rows)]
    generate_chunk(model, store, cf_rows.iloc[:batch], batch, device)  # warm-up
    throughput.synchronize(device)
    began = time.perf_counter()
    generate_chunk(model, store, cf_rows, batch, device)
    throughput.synchronize(device)
    generate_rate = len(cf_rows) / (time.perf_counter() - began)
    emit(
        "cf_generate_images_per_s",
        round(generate_rate, 1),
        "images/s",
        name,
        image_size=store.size[0],
        batch_size=batch,
        counterfactuals=len(cf_rows),
    )
    return {
        "train_images_per_s": levers_rate,
        "train_batch": sizes.cf_chosen_batch,
        "generate_images_per_s": generate_rate,
    }


def training_hours(
    images: int,
    gpus: int,
    generator_epochs: int,
    generator_images_per_s: float,
    counterfactuals: int,
    generate_images_per_s: float,
    pretrain_epochs: int,
    pretrain_views_per_s: float | None,
) -> dict:
    """Hours to train the generator (``generator_epochs`` over ``images``), write its store (``counterfactuals``
    images) and pretrain one encoder (``pretrain_epochs``, two views per image) on ``gpus`` GPUs at the
    rates measured on one, assuming the rates add up over GPUs (data parallel, no loss to communication:
    a lower bound). ``pretrain_views_per_s`` None: that part and the total are None."""
    generator = generator_epochs * images / (generator_images_per_s * gpus) / 3600
    store = counterfactuals / (generate_images_per_s * gpus) / 3600
    pretrain = (
        None if pretrain_views_per_s is None else pretrain_epochs * 2 * images / (pretrain_views_per_s * gpus) / 3600
    )
    total = None if pretrain is None else generator + store + pretrain
    return {"generator_hours": generator, "store_hours": store, "pretrain_hours": pretrain, "total_hours": total}


def estimate(rates: dict[str, float], pretrain_views_per_s: float | None, images: int, gpus: int, device: str) -> None:
    """The estimate of ``training_hours`` for the reference presets: ``cf_train_224``'s epochs, one
    counterfactual per training image and other scanner (two scanners: one), ``pretrain_padchest``'s epochs."""
    generator_epochs = build_config(
        CFTrainConfig, resolve_config_path("cf_train_224"), ["data=unused"]
    ).trainer.max_epochs
    pretrain_epochs = build_config(
        PretrainConfig, resolve_config_path("pretrain_padchest"), ["data=unused"]
    ).trainer.max_epochs
    hours = training_hours(
        images,
        gpus,
        generator_epochs,
        rates["train_images_per_s"],
        images,
        rates["generate_images_per_s"],
        pretrain_epochs,
        pretrain_views_per_s,
    )
    rounded = {k: None if v is None else round(v, 3) for k, v in hours.items()}
    emit(
        "training_hours_estimate",
        rounded["total_hours"],
        "hours",
        device,
        **rounded,
        images=images,
        gpus=gpus,
        generator_epochs=generator_epochs,
        generator_batch=rates["train_batch"],
        levers=True,
        generator_images_per_s=round(rates["train_images_per_s"], 1),
        counterfactuals=images,
        pretrain_epochs=pretrain_epochs,
        pretrain_views_per_s=pretrain_views_per_s and round(pretrain_views_per_s, 1),
        estimated=True,
        note="rates measured on one GPU, taken to add up over GPUs"
        + ("" if pretrain_views_per_s else "; pretrain not measured"),
    )


def demo_wall_time(tmp: Path, device: str, run: bool, why: str) -> None:
    if not run:
        emit("demo_seconds", None, "s", device, skipped=why)
        return
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cfcl", "demo", "--out", str(tmp / "demo")], check=True, stdout=sys.stderr)
    emit(
        "demo_seconds", round(time.perf_counter() - began, 1), "s", device, stages=demo_time.stage_seconds(tmp / "demo")
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, no batch search, no demo (< 2 min)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (cfcl's and the bare one)")
    parser.add_argument("--data", type=Path, help="a 224-px image store; default: random images")
    parser.add_argument(
        "--cf-batch", type=int, help="the generator's chosen batch (default 64), with the levers off and on"
    )
    parser.add_argument("--images", type=int, default=DEFAULT_TRAIN_IMAGES, help="training images of the estimate")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the estimate")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=list(DEFAULT_PARTS),
        help="measure these parts only (default: all but demo); 'generator' includes the estimate",
    )
    parser.add_argument(
        "--profile-dir", type=Path, help="write profiler tables of a few steps of the pretraining loops here"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # toy sizes: tests the script on a CPU
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: this machine has no CUDA GPU; the suite measures the GPU path only")
    if args.device == "cpu" and not args.tiny:
        raise SystemExit("gpu_suite: --device cpu runs only with --tiny (toy sizes that test the script)")
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    if args.cf_batch:
        sizes = replace(sizes, cf_chosen_batch=args.cf_batch)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        n = max(sizes.pretrain_batch * (sizes.pretrain_steps + sizes.pretrain_warmup + 2), 64)
        data = args.data or throughput.random_store(tmp / "store", n, sizes.image)
        pretrain_rate = None
        if "pretrain" in args.only:
            pretrain_rate = pretraining(sizes, data, tmp, device, name, args.tiny, args.compile, args.profile_dir)
        if "vit" in args.only:
            dino_pretraining(sizes, data, tmp, device, name, args.tiny, args.profile_dir)
        if "generator" in args.only:
            rates = generator(sizes, data, tmp, device, name, args.tiny)
            estimate(rates, pretrain_rate, args.images, args.gpus, name)
        if "demo" in args.only:
            demo_wall_time(tmp, name, sizes.demo, "--tiny" if args.tiny else "--quick")


if __name__ == "__main__":
    main()
