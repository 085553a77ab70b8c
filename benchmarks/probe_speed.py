"""Linear-probing speed at demo scale: 3 methods x 3 label fractions x 3 seeds, one JSON line.

Usage: python benchmarks/probe_speed.py STORE [--encoder PRETRAIN_FOLDER ...] [--threads N]

STORE is an image store, e.g. the default benchmark (``cfcl data synth --out DIR``).
Without ``--encoder``, three encoders of the pretrain stage's default architecture are
initialised at random and saved as pretrain folders (their weights do not change the cost).
The whole ``cfcl evaluate`` stage is timed, linear protocol only (fine-tuning, baselines and
embedding analysis off): feature extraction once per encoder, then 3 x 3 x 3 ID probes, OOD
probes and direct transfers, metrics with bootstrap intervals. Target: <= 120 s on 2 CPU cores.
``cpu_seconds_total`` (process CPU time, all threads) helps to read a wall time taken under contention.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="image store, e.g. from `cfcl data synth --out DIR`")
    parser.add_argument("--encoder", action="append", type=Path, default=[], help="pretrain folder (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cfcl.config import StrictModel
    from cfcl.contrastive.config import EncoderConfig
    from cfcl.contrastive.encoders import build_encoder, save_encoder
    from cfcl.data.store import ImageStore
    from cfcl.evaluation.config import EvaluateConfig
    from cfcl.evaluation.evaluate import run
    from cfcl.layout import EVAL, PRETRAIN, pretrain_name
    from cfcl.stage import run_stage

    class BenchmarkEncoder(StrictModel):
        method: str

    store = ImageStore.open(args.store)
    with tempfile.TemporaryDirectory() as tmp:
        encoders = list(args.encoder)
        if not encoders:
            arch = EncoderConfig()
            for i, method in enumerate(("simclr", "simclr_plus", "cf_simclr")):
                torch.manual_seed(i)
                folder = Path(tmp) / pretrain_name(method, 0)
                info = {"image_size": list(store.size), "method": method, "seed": 0}

                def random_encoder(stage, info=info) -> None:
                    save_encoder(stage.out, build_encoder(arch.arch, **arch.arch_kwargs), info)

                run_stage(PRETRAIN, folder, BenchmarkEncoder(method=method), random_encoder)
                encoders.append(folder)
        config = EvaluateConfig(
            data=args.store,
            encoders=encoders,
            label_fractions=[0.05, 0.25, 1.0],
            seeds=[0, 1, 2],
            random_baseline=False,
            finetune={"supervised": False},
            embeddings={"enabled": False},
        )
        tic, cpu = time.time(), time.process_time()
        timings = run(config, Path(tmp) / EVAL)["timings"]
        seconds, cpu_seconds = time.time() - tic, time.process_time() - cpu
    print(
        json.dumps(
            {
                "benchmark": "probe_speed",
                "store": str(args.store),
                "images": len(store),
                "image_size": list(store.size),
                "methods": len(encoders),
                "label_fractions": config.label_fractions,
                "seeds": config.seeds,
                "probes": len(encoders) * len(config.label_fractions) * len(config.seeds) * 2,
                "torch_threads": args.threads,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "seconds_total": round(seconds, 1),
                "cpu_seconds_total": round(cpu_seconds, 1),
                "seconds_features_and_probes": timings.get("linear"),
                "seconds_metrics": timings.get("metrics"),
                "target_seconds": 120,
                "pass": seconds <= 120,
            }
        )
    )


if __name__ == "__main__":
    main()
