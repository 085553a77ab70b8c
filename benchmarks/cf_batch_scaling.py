"""Is a larger generator batch stable? A tiny HVAE at several batch sizes, the same number of images each.

Each batch size trains a fresh HVAE (same seed) on the same images for ``--images`` training images,
with the learning rate and warm-up scaled from ``--reference-batch`` by ``--rule``
(``cfcl.counterfactual.generator.module.scaled_lr_and_warmup``), through cfcl's own training module
and Lightning loop. One JSON line per batch size: the skipped-update rate (target <= 1 %) and the
validation -ELBO (nats per pixel, lower is better) of the trained weights and of their EMA after those
images; then one summary line comparing each batch with the smallest (target: no worse).

It stands in on a CPU for the 224-px question (a larger batch must train as well per image seen as
batch 16); the figure on a GPU is ``benchmarks/gpu_suite.py``'s skipped-update rate at the chosen batch.

Usage: python benchmarks/cf_batch_scaling.py [--data STORE] [--batches 16 64 128] [--images N] [--rule sqrt]
       [--threads N] [--set KEY=VALUE ...]

Without ``--data`` a synthetic benchmark store at 32 px is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from cfcl.config import build_config
from cfcl.counterfactual.config import CFTrainConfig
from cfcl.counterfactual.data import ParentImageDataset, split_batch, split_indices, training_batches
from cfcl.counterfactual.generator.losses import elbo_terms
from cfcl.counterfactual.generator.train import open_image_store, training_module, validation_rows
from cfcl.counterfactual.parents import parent_specs
from cfcl.loaders import ordered_loader, step_loader, trainer_progress
from cfcl.training import make_trainer

#: A tiny HVAE for 32-px images: levels at 32, 16, 8 px, latents at 16 px and below.
TINY = ["arch.widths=[16, 32, 64]", "arch.blocks=[1, 2, 2]", "arch.latent_channels=4", "arch.stochastic_max_res=16"]


def synthetic_store(out: Path, size: int, n_train: int) -> Path:
    """The synthetic benchmark at ``size`` px with ``n_train`` training images and 512 validation images."""
    from cfcl.data.synthetic.config import SynthConfig
    from cfcl.data.synthetic.generate import run

    config = build_config(
        SynthConfig,
        None,
        [f"image_size={size}", f"n_train={n_train}", "n_val=512", "n_test=64", "n_ood_train=0", "n_ood_test=64"],
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON lines alone
        run(config, out)
    return out


@torch.no_grad()
def validation_nelbo(model: torch.nn.Module, dataset: ParentImageDataset, batch_size: int) -> float:
    """-ELBO (nats per pixel) over every image of ``dataset``, the same posterior draws for every model."""
    model.eval()
    torch.manual_seed(0)
    total = 0.0
    for batch in ordered_loader(dataset, batch_size):
        x, pa = split_batch(batch)
        total += float(elbo_terms(model, x, pa)["nelbo"]) * len(x)
    return total / len(dataset)


def train_at(
    config: CFTrainConfig,
    train_set: ParentImageDataset,
    val_set: ParentImageDataset,
    image_size: int,
    specs: list,
    images: int,
    out: Path,
) -> dict:
    steps = max(1, images // config.batch_size)
    torch.manual_seed(config.seed)
    module = training_module(config, image_size, specs)
    trainer = make_trainer(
        config.trainer,
        out,
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    batches = training_batches(train_set, config.batch_size, config.seed)
    began = time.perf_counter()
    trainer.fit(module, step_loader(batches, trainer_progress(trainer), 0))
    seconds = time.perf_counter() - began
    skipped = int(module.skipped)
    return {
        "batch_size": config.batch_size,
        "lr": module.lr,
        "warmup_steps": module.warmup_steps,
        "steps": steps,
        "images": steps * config.batch_size,
        "skipped": skipped,
        "skipped_update_rate": round(skipped / steps, 4),
        "val_nelbo": round(validation_nelbo(module.model, val_set, 128), 4),
        "val_nelbo_ema": round(validation_nelbo(module.ema_model, val_set, 128), 4),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a square image store; default: a 32-px synthetic one")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--images", type=int, default=6400, help="training images seen at every batch size")
    parser.add_argument("--rule", choices=["none", "linear", "sqrt"], default="sqrt")
    parser.add_argument("--reference-batch", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1, help="1: a busy 2-core machine slows two threads down many times"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="more cf train settings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        store = open_image_store(args.data or synthetic_store(tmp / "store", 32, 3000))
        base = [
            f"data={store.path}",
            *([] if args.data else TINY),
            "trainer.accelerator=cpu",
            "trainer.progress_bar=false",
            "trainer.precision=32-true",
            f"optim.lr_scaling={args.rule}",
            f"optim.reference_batch={args.reference_batch}",
        ]
        results = []
        for batch_size in args.batches:
            config = build_config(CFTrainConfig, None, [*base, f"batch_size={batch_size}", *args.overrides])
            train_rows = split_indices(store, config.splits)
            specs = parent_specs(store, config.parents, train_rows)
            val_rows = validation_rows(store, config)
            result = train_at(
                config,
                ParentImageDataset(store, train_rows, specs),
                ParentImageDataset(store, val_rows, specs),
                store.size[0],
                specs,
                args.images,
                tmp / f"b{batch_size}",
            )
            results.append(result)
            print(
                json.dumps(
                    {
                        "benchmark": "cf_batch_scaling",
                        "rule": args.rule,
                        "reference_batch": args.reference_batch,
                        **result,
                    }
                ),
                flush=True,
            )
        first = results[0]
        print(
            json.dumps(
                {
                    "benchmark": "cf_batch_scaling",
                    "summary": True,
                    "rule": args.rule,
                    "images": args.images,
                    "val_nelbo_minus_smallest_batch": {
                        r["batch_size"]: round(r["val_nelbo"] - first["val_nelbo"], 4) for r in results
                    },
                    "ema_val_nelbo_minus_smallest_batch": {
                        r["batch_size"]: round(r["val_nelbo_ema"] - first["val_nelbo_ema"], 4) for r in results
                    },
                    "max_skipped_update_rate": max(r["skipped_update_rate"] for r in results),
                    "target_skipped_update_rate": 0.01,
                }
            )
        )


if __name__ == "__main__":
    main()
