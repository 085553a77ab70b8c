"""The generator's training alone and beside another 2-thread CPU job: a fair share costs ~2x, not 20x.

Usage: python benchmarks/cpu_share.py STORE [--steps N] [--env KEY=VALUE ...] [--set KEY=VALUE ...]

Runs ``cfcl cf train`` on STORE (e.g. ``cfcl data synth --out DIR``) for ``--steps`` steps as a user
would, in a subprocess, first alone, then while another process multiplies matrices on 2 threads,
and prints one JSON line per run and the slowdown (target: at most 3x). ``cfcl`` lets OpenMP's idle
threads sleep when other processes keep the CPUs busy as it starts (``cfcl.training.share_busy_cpus``);
``--env`` sets variables of the training process to compare, e.g. ``--env OMP_WAIT_POLICY=ACTIVE
--env GOMP_SPINCOUNT=300000`` (libgomp's own default: spin a while, then sleep) or
``--env OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPETITOR = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a)
"""
TARGET = 3.0


def train_seconds(store: Path, steps: int, overrides: list[str], env: dict[str, str], out: Path) -> float:
    """Wall seconds of one ``cfcl cf train`` of ``steps`` steps (process start included)."""
    sets = [
        arg
        for item in [f"trainer.max_steps={steps}", "trainer.progress_bar=false", *overrides]
        for arg in ("--set", item)
    ]
    command = [sys.executable, "-m", "cfcl", "cf", "train", "--data", str(store), "--out", str(out), "--force", *sets]
    started = time.perf_counter()
    subprocess.run(command, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="image store, e.g. from `cfcl data synth --out DIR`")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the training process"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="cf train override"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cf_model"
        alone = train_seconds(args.store, args.steps, args.overrides, env, out)
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
        try:
            time.sleep(2)  # the competitor is running before training starts
            beside = train_seconds(args.store, args.steps, args.overrides, env, out)
        finally:
            competitor.kill()
            competitor.wait()
    common = {"benchmark": "cpu_share", "steps": args.steps, "env": env, "cores": len(os.sched_getaffinity(0))}
    print(json.dumps({**common, "run": "alone", "seconds": round(alone, 1)}))
    print(json.dumps({**common, "run": "beside a 2-thread job", "seconds": round(beside, 1)}))
    slowdown = beside / alone
    print(json.dumps({**common, "slowdown": round(slowdown, 2), "target": f"<= {TARGET}x", "met": slowdown <= TARGET}))


if __name__ == "__main__":
    main()
