"""Counterfactual generation time for the whole training set (``cfcl cf generate``), one JSON line.

Usage: python benchmarks/cf_generate_speed.py GENERATOR STORE [--threads N] [--keep DIR]

GENERATOR is a ``cfcl cf train`` / ``cf finetune`` folder; STORE the image store it was trained on.
Target: <= 60 s on 2 CPU cores for every training image x every other in-distribution domain.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator", type=Path)
    parser.add_argument("store", type=Path, help="image store, e.g. from `cfcl data synth --out DIR`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write the store here instead of a temporary folder")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cfcl.config import build_config
    from cfcl.counterfactual.config import CFGenerateConfig
    from cfcl.counterfactual.generate_store import run
    from cfcl.presets import resolve_config_path

    overrides = [f"data={args.store}", f"generator={args.generator}", "progress_bar=false"]
    config = build_config(CFGenerateConfig, resolve_config_path("cf_generate"), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "cf_store"
        wall, cpu = time.perf_counter(), time.process_time()
        manifest = run(config, out, force=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        json.dumps(
            {
                "benchmark": "cf_generate_speed",
                "seconds": round(wall, 1),
                "generate_seconds": manifest["timings"]["generate"],
                "cpu_seconds": round(cpu, 1),
                "threads": args.threads,
                "counterfactuals": manifest["n"],
                "images_per_second": round(manifest["n"] / max(wall, 1e-9), 1),
                "target_seconds": 60,
            }
        )
    )


if __name__ == "__main__":
    main()
