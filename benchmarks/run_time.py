"""Where a finished `cfcl run` spent its time: each stage's own wall time, summed per kind and per draw.

Reads every stage's ``manifest.json`` (``timings.total``: the stage's last run, a resumed stage's final
attempt) under RUN and groups the stages into data, generator (every ``cf_*`` stage), pretraining and
evaluation, per draw folder (``draw-<d>/``) or for the run itself. The sum is the time the run takes
from an empty folder on the same machine, without the few seconds between stages. Prints a Markdown
table, then one JSON line.

    python benchmarks/run_time.py runs/benchmark_decide
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cfcl.layout import RunLayout

KINDS = ("data", "generator", "pretrain", "eval", "other")


def stage_seconds(run: Path) -> dict[str, float]:
    """Each finished stage folder under ``run`` (relative path) -> its recorded wall time in seconds."""
    times = {}
    for manifest in sorted(run.rglob("manifest.json")):
        info = json.loads(manifest.read_text())
        total = info.get("timings", {}).get("total")
        if total is not None and info.get("status") == "complete":
            times[str(manifest.parent.relative_to(run))] = total
    return times


def kind(stage: str) -> str:
    """The group of a stage folder of one draw: ``data``, ``generator`` (``cf_*``), ``pretrain``, ``eval``, or
    ``other`` (the report)."""
    first = stage.split("/")[0]
    if first.startswith("cf_"):
        return "generator"
    return first if first in KINDS else "other"


def draw_times(folder: Path) -> dict[str, float | int | bool]:
    """Seconds per kind of stage in one draw folder, the number of pretraining runs, the total and whether the
    draw is finished (its evaluation is)."""
    stages = stage_seconds(folder)
    sums = dict.fromkeys(KINDS, 0.0)
    for stage, seconds in stages.items():
        sums[kind(stage)] += seconds
    return {
        **{k: round(v, 1) for k, v in sums.items()},
        "pretrain_runs": sum(kind(s) == "pretrain" for s in stages),
        "total": round(sum(stages.values()), 1),
        "finished": "eval" in stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `cfcl run` folder (with or without draw-<d>/ folders)")
    args = parser.parse_args()
    if not args.run.is_dir():
        raise SystemExit(f"run_time: {args.run} is not a folder; pass a `cfcl run` output folder")
    draws = RunLayout(args.run).draws()
    folders = {f"draw-{d}": layout.root for d, layout in draws.items()} if draws else {args.run.name: args.run}
    times = {name: draw_times(folder) for name, folder in folders.items()}
    finished = [row["total"] for row in times.values() if row["finished"]]
    if not finished:
        raise SystemExit(f"run_time: {args.run} holds no finished draw (no completed eval stage); time a finished run")
    columns = [*KINDS, "pretrain_runs", "total", "finished"]
    print("| folder | " + " | ".join(columns) + " | total, min |")
    print("|---" * (len(columns) + 2) + "|")
    for name, row in times.items():
        print(f"| {name} | " + " | ".join(str(row[c]) for c in columns) + f" | {row['total'] / 60:.1f} |")
    print(
        json.dumps(
            {
                "benchmark": "run_time",
                "run": str(args.run),
                "folders": times,
                "seconds": round(sum(row["total"] for row in times.values()), 1),
                "minutes_per_finished_folder": {
                    "min": round(min(finished) / 60, 1),
                    "mean": round(sum(finished) / len(finished) / 60, 1),
                    "max": round(max(finished) / 60, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
