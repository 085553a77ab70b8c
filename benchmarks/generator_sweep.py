"""Generator variants against the quality targets (docs/results.md): prints a table and one JSON line.

For each variant, trains the HVAE (``cfcl cf train --config cf_train`` with the variant's
overrides), fine-tunes it (``cfcl cf finetune --config cf_finetune`` with the given guide) and
measures both with the given judge on the validation split, so that a generator can be chosen
without reading the test split. A variant is ``NAME:KEY=VALUE,...`` where each key starts with
``train.`` or ``finetune.``; ``NAME:`` alone is the shipped presets. Variants with the same train
overrides share one trained model, and stages already up to date in ``--out`` are kept, so an
interrupted sweep resumes.

    python benchmarks/generator_sweep.py --data RUN/data --guide RUN/cf_guide --judge RUN/cf_judge
        --out W --variant base: --variant e24:train.trainer.max_epochs=24 [--set n_per_domain=64]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

from cf_quality import evaluate

from cfcl.cli import main as cfcl

STAGES = ("train", "finetune")
COLUMNS = (
    "effectiveness",
    "effectiveness_per_target",
    "mae_ratio",
    "mae_ratio_rare_source",
    "mae_ratio_rare_target",
    "reversibility",
)


def parse_variant(spec: str) -> tuple[str, dict[str, list[str]]]:
    """'e24:train.trainer.max_epochs=24,finetune.lr=1e-4' -> ('e24', {'train': [...], 'finetune': [...]})."""
    name, sep, body = spec.partition(":")
    if not sep or not name:
        raise SystemExit(f"--variant {spec!r}: expected NAME:KEY=VALUE,... (or NAME: for the shipped presets)")
    overrides: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for item in filter(None, re.split(r",(?![^\[]*\])", body)):  # commas inside [...] belong to a value
        stage, dot, rest = item.partition(".")
        if stage not in STAGES or not dot or "=" not in rest:
            raise SystemExit(f"--variant {spec!r}: {item!r} is not train.KEY=VALUE or finetune.KEY=VALUE")
        overrides[stage].append(rest)
    return name, overrides


def stage(words: list[str], out: Path, overrides: list[str]) -> float:
    """Runs (or keeps) one stage writing to ``out``; its own recorded time, also when it was kept."""
    sets = [arg for item in [*overrides, "trainer.progress_bar=false"] for arg in ("--set", item)]
    code = cfcl([*words, "--out", str(out), *sets])
    if code:
        raise SystemExit(f"cfcl {' '.join(words)} failed with exit code {code}")
    return json.loads((out / "manifest.json").read_text())["timings"]["total"]


def sweep(args: argparse.Namespace) -> dict:
    evaluate_sets = ["splits=[val]", *args.set]
    report: dict = {"data": str(args.data), "judge": str(args.judge), "evaluate": evaluate_sets, "variants": {}}
    for name, overrides in map(parse_variant, args.variant):
        folder = args.out / name
        trained = hashlib.sha256(json.dumps(overrides["train"]).encode()).hexdigest()[:12]
        model, tuned = args.out / f"cf_model-{trained}", folder / "cf_finetune"  # one model per train overrides
        train = ["cf", "train", "--config", "cf_train", "--data", str(args.data)]
        finetune = ["cf", "finetune", "--config", "cf_finetune", "--data", str(args.data)]
        finetune += ["--generator", str(model), "--guide", str(args.guide)]
        seconds = {
            "train": stage(train, model, overrides["train"]),
            "finetune": stage(finetune, tuned, overrides["finetune"]),
        }
        report["variants"][name] = {
            "overrides": overrides,
            "seconds": seconds,
            "base": evaluate(args.data, model, args.judge, folder / "eval_base", evaluate_sets),
            "finetuned": evaluate(args.data, tuned, args.judge, folder / "eval_finetuned", evaluate_sets),
        }
    return report


def markdown(report: dict) -> str:
    def cell(value) -> str:
        if isinstance(value, dict):
            return " ".join(f"{key} {share:.2f}" for key, share in value.items())
        return f"{value:.3f}"

    lines = [
        "| variant | generator | train s | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, variant in report["variants"].items():
        for which in ("base", "finetuned"):
            row = variant[which]
            lines.append(
                f"| {name} | {which} | {variant['seconds']['train']:.0f} | "
                + " | ".join(cell(row[column]) for column in COLUMNS)
                + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="image store with true_cf/ (synthetic benchmark)")
    parser.add_argument("--guide", type=Path, required=True, help="guide folder (cfcl cf classifier --config cf_guide)")
    parser.add_argument("--judge", type=Path, required=True, help="judge folder (cfcl cf classifier --config cf_judge)")
    parser.add_argument("--out", type=Path, required=True, help="one folder per variant; kept stages are reused")
    parser.add_argument("--variant", action="append", required=True, help="NAME:train.KEY=VALUE,finetune.KEY=VALUE")
    parser.add_argument("--set", action="append", default=[], help="cf evaluate override, e.g. n_per_domain=64")
    result = sweep(parser.parse_args())
    print(markdown(result))
    print(json.dumps(result))
