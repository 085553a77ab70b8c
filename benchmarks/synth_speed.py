"""Generation speed of the synthetic benchmark: prints one JSON line.

Target (docs/performance.md): 10,000 images at 64 px, with the true counterfactual of every image
under every scanner, in <= 30 s on 2 cores. Times the whole stage (sampling, rendering,
acquisition under every scanner, writing both stores, overview figure).

    python benchmarks/synth_speed.py [--images 10000] [--size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.generate import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    n = args.images
    sizes = {"n_train": n // 2, "n_val": n // 10, "n_test": n // 5, "n_ood_train": n // 10}
    sizes["n_ood_test"] = n - sum(sizes.values())
    config = SynthConfig(image_size=args.size, **sizes)
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run(config, Path(tmp) / "synth")
        seconds = time.perf_counter() - tic
    print(
        json.dumps(
            {
                "benchmark": "synth_speed",
                "images": n,
                "size": args.size,
                "scanners": len(config.scanners),
                "images_written": n * (1 + len(config.scanners)),
                "seconds": round(seconds, 2),
                "target_seconds": 30,
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
