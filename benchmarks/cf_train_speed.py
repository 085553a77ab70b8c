"""HVAE training time at demo scale (``cfcl cf train --config cf_train``), one JSON line.

Usage: python benchmarks/cf_train_speed.py STORE [--threads N] [--set KEY=VALUE ...] [--keep DIR]

STORE is an image store, e.g. the default benchmark (``cfcl data synth --out DIR``).
Target: <= 240 s on 2 CPU cores. ``cpu_seconds`` (process CPU time, all threads) helps to read
a wall time taken under contention.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="image store, e.g. from `cfcl data synth --out DIR`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--keep", type=Path, help="write the stage here instead of a temporary folder")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cfcl.config import build_config
    from cfcl.counterfactual.config import CFTrainConfig
    from cfcl.counterfactual.generator.train import run
    from cfcl.presets import resolve_config_path

    overrides = [f"data={args.store}", "trainer.progress_bar=false", *args.overrides]
    config = build_config(CFTrainConfig, resolve_config_path("cf_train"), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "cf_model"
        wall, cpu = time.perf_counter(), time.process_time()
        manifest = run(config, out, force=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = manifest["metrics"]
    print(
        json.dumps(
            {
                "benchmark": "cf_train_speed",
                "seconds": round(wall, 1),
                "fit_seconds": manifest["timings"]["fit"],
                "cpu_seconds": round(cpu, 1),
                "threads": args.threads,
                "parameters": manifest["parameters"],
                "epochs": config.trainer.max_epochs,
                "val_nelbo": round(metrics.get("val/nelbo", float("nan")), 4),
                "target_seconds": 240,
            }
        )
    )


if __name__ == "__main__":
    main()
