"""Domain classifiers and counterfactual quality (docs/performance.md, docs/results.md): prints one JSON line.

Trains the guide and the judge (``cfcl cf classifier --config cf_guide / cf_judge``) on a store,
timing each and reading their validation / test balanced accuracy, then runs ``cfcl cf evaluate``
with the store's true counterfactuals as a perfect generator (the ceiling: the judge's
effectiveness there must be >= 0.95) and, if given, with each ``--generator`` folder.

    python benchmarks/cf_quality.py --store run/data [--work DIR] [--generator run/cf_model ...]
        [--set n_per_domain=64 ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cfcl.cli import main as cfcl
from cfcl.layout import true_cf


def train(role: str, store: Path, out: Path) -> dict:
    started = time.time()
    code = cfcl(
        [
            "cf",
            "classifier",
            "--config",
            f"cf_{role}",
            "--data",
            str(store),
            "--out",
            str(out),
            "--force",
            "--set",
            "trainer.progress_bar=false",
        ]
    )
    if code:
        raise SystemExit(f"cf classifier ({role}) failed with exit code {code}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "arch": manifest["arch"],
        "seconds": round(time.time() - started, 1),
        "train_seconds": manifest["timings"]["train"],
        "epochs": manifest["epochs"],
        "val_balanced_accuracy": manifest["metrics"]["val"]["balanced_accuracy"],
        "test_balanced_accuracy": manifest["metrics"].get("test", {}).get("balanced_accuracy"),
    }


def evaluate(store: Path, generator: Path, judge: Path, out: Path, overrides: list[str]) -> dict:
    started = time.time()
    sets = [arg for item in overrides for arg in ("--set", item)]
    code = cfcl(
        [
            "cf",
            "evaluate",
            "--data",
            str(store),
            "--generator",
            str(generator),
            "--judge",
            str(judge),
            "--out",
            str(out),
            "--force",
            *sets,
        ]
    )
    if code:
        raise SystemExit(f"cf evaluate of {generator} failed with exit code {code}")
    result = json.loads((out / "cf_quality.json").read_text())
    truth = result["truth"] or {}
    confusion = result["effectiveness"]["confusion"]
    return {
        "seconds": round(time.time() - started, 1),
        "effectiveness": result["effectiveness"]["balanced_accuracy"],
        "auroc": result["effectiveness"]["auroc_macro"],
        "effectiveness_per_target": {
            label: row[i] / sum(row)
            for i, (label, row) in enumerate(zip(confusion["labels"], confusion["matrix"]))
            if sum(row)
        },
        "composition_mae_1": (result["composition"] or {}).get("mae_1"),
        "reversibility": (result["reversibility"] or {}).get("mae"),
        "mae_cf": truth.get("mae_cf"),
        "mae_identity": truth.get("mae_identity"),
        "mae_ratio": truth.get("ratio"),
        "mae_ratio_rare_source": truth.get("rare_as_source", {}).get("ratio"),
        "mae_ratio_rare_target": truth.get("rare_as_target", {}).get("ratio"),
        "passed": result["passed"],
    }


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="cf_quality_"))
    report = {"store": str(args.store)}
    for role in ("guide", "judge"):
        report[role] = train(role, args.store, work / role)
    judge = work / "judge"
    report["true_cf"] = evaluate(args.store, true_cf(args.store), judge, work / "eval_true_cf", args.set)
    for i, generator in enumerate(args.generator):
        report[f"generator_{i}"] = {
            "path": str(generator),
            **evaluate(args.store, generator, judge, work / f"eval_{i}", args.set),
        }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="image store with true_cf/ (synthetic benchmark)")
    parser.add_argument(
        "--work", type=Path, help="folder for the classifiers and evaluations (default: a temporary one)"
    )
    parser.add_argument("--generator", type=Path, action="append", default=[], help="generator folder to evaluate too")
    parser.add_argument("--set", action="append", default=[], help="cf evaluate override, e.g. n_per_domain=64")
    print(json.dumps(run(parser.parse_args())))
