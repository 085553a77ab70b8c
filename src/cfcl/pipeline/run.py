"""Execute a plan: skip what is up to date, resume what was interrupted, run the rest."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cfcl import layout
from cfcl.errors import ConfigError
from cfcl.pipeline.config import RunConfig
from cfcl.pipeline.plan import GROUPS, Node, plan
from cfcl.registry import load_ref
from cfcl.stage import stage_state, write_config

ACTIONS = {"complete": "up to date", "interrupted": "resume", "stale": "rerun", "absent": "run"}


def _check_group(name: str | None, flag: str) -> None:
    if name is not None and name not in GROUPS:
        raise ConfigError(f"{flag} {name!r} is not a stage; stages are: {', '.join(GROUPS)}")


def _execute(node: Node, action: str) -> None:
    """Run one stage; a stale or forced output is cleared first so no old checkpoint is resumed.

    The stage runs without ``force``: its folder is then either empty or an interrupted run of
    this very config, which the stage resumes (``force`` would make it start afresh).
    """
    if action in ("rerun", "forced") and node.out.exists():
        shutil.rmtree(node.out)
    began = time.time()
    load_ref(node.command.runner)(node.config, out=node.out, force=False)
    print(f"  {node.name:<24} done in {time.time() - began:.1f} s", flush=True)


def run_pipeline(
    run: RunConfig,
    source: str = "run config",
    only: str | None = None,
    start: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> Path:
    """Run every stage of ``run`` that is not up to date, then write the report; returns the run folder.

    ``only`` runs one stage group, ``start`` re-runs a group and everything after it, ``force``
    re-runs everything; ``dry_run`` prints the plan and runs nothing.
    """
    _check_group(only, "--only")
    _check_group(start, "--from")
    nodes = plan(run, source)
    first = GROUPS.index(start) if start else len(GROUPS)
    if not dry_run:
        write_config(run.out, run)
    print(f"run folder: {run.out}", flush=True)
    for node in nodes:
        if only is not None and node.group != only:
            continue
        forced = force or GROUPS.index(node.group) >= first
        action = "forced" if forced else ACTIONS[stage_state(node.out, node.config)]
        print(f"  {node.name:<24} {action}", flush=True)
        if not dry_run and action != "up to date":
            _execute(node, action)
    if only in (None, layout.REPORT) and not dry_run:
        from cfcl.report.report import run_report

        run_report(run.out)
    return run.out


def load_run_config(path: str | Path, out: Path | None = None, overrides: list[str] = ()) -> tuple[RunConfig, str]:
    """A run config from a file or preset name, with ``--set`` overrides and ``--out``."""
    from cfcl.config import build_config
    from cfcl.presets import resolve_config_path

    resolved = resolve_config_path(path)
    extra = [*overrides, *([f"out={out}"] if out is not None else [])]
    return build_config(RunConfig, resolved, extra), f"run config {resolved}"


def demo(out: Path | None = None, overrides: list[str] = (), dry_run: bool = False) -> Path:
    """``cfcl run demo``, then the headline table and the report's path on the terminal."""
    run, source = load_run_config("demo", out, overrides)
    folder = run_pipeline(run, source, dry_run=dry_run)
    if not dry_run:
        from cfcl.report.summary import print_headline

        print_headline(folder)
        print(f"report: {layout.RunLayout(folder).report / layout.INDEX}")
    return folder
