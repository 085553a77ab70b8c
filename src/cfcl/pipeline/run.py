"""Execute a plan: skip what is up to date, resume what was interrupted, run the rest."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from cfcl import layout
from cfcl.config import build_config
from cfcl.distributed import Coordinator, check_machine, is_writer, session
from cfcl.errors import ConfigError, MissingKeyError
from cfcl.lock import folder_lock
from cfcl.pipeline.config import RunConfig
from cfcl.pipeline.plan import GROUPS, Node, draw_runs, plan
from cfcl.stage import check_output_folder, stage_state, write_config
from cfcl.training import DevicesConfig, TrainerConfig

ACTIONS = {"complete": "up to date", "interrupted": "resume", "stale": "rerun", "absent": "run"}


def _check_group(name: str | None, flag: str) -> None:
    if name is not None and name not in GROUPS:
        raise ConfigError(f"{flag} {name!r} is not a stage; stages are: {', '.join(GROUPS)}")


def _action(node: Node, first: int, force: bool) -> str:
    """What the writer does with ``node`` now: ``forced`` (--force, --from) or its state's action."""
    if force or GROUPS.index(node.group) >= first:
        return "forced"
    return ACTIONS[stage_state(node.out, node.config)]


def _check_stage(node: Node, source: str) -> None:
    """A stage's own check (:attr:`cfcl.registry.StageCode.check`), its errors named as in the run config."""
    try:
        node.command.load().check(node.config)
    except MissingKeyError as exc:
        raise exc.within(node.section) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}, section '{node.section}': {exc}") from None


def _check_before_running(
    run: RunConfig, nodes: list[Node], source: str, only: str | None, first: int, force: bool
) -> None:
    """Every mistake that can be known before any stage starts, also under --dry-run: a run or stage
    folder that is not a folder, and the own check of every stage that is to run (a dataset root:
    a stage that is up to date does not read it again)."""
    check_output_folder(run.out, f"run folder {run.out} (--out, or 'out' in the run config)")
    for node in nodes:
        check_output_folder(node.out, f"stage folder {node.out}")
        selected = only is None or node.group == only
        if node.command.load().check is not None and selected and _action(node, first, force) != "up to date":
            _check_stage(node, source)


def _execute(node: Node, action: str, writer: bool) -> None:
    """Run one stage; a stale or forced output is cleared first so no old checkpoint is resumed.

    The stage runs without ``force``: its folder is then either empty or an interrupted run of
    this very config, which the stage resumes (``force`` would make it start afresh). Every rank
    calls the stage, which decides what this rank does there (:func:`cfcl.stage.run_stage`);
    only the writer clears, holding the folder's lock; the stage says what it did.
    """
    run = node.command.load().run
    if not writer:
        run(node.config, out=node.out, force=False)
        return
    with folder_lock(node.out):
        if action in ("rerun", "forced") and node.out.exists():
            shutil.rmtree(node.out)
        run(node.config, out=node.out, force=False)


def _walk(
    nodes: list[Node], coordinator: Coordinator, only: str | None, first: int, force: bool, dry_run: bool
) -> None:
    """Every rank walks the same plan: rank 0 decides each stage's action, every rank runs its
    part, and the ranks meet after each stage. A rank that fails stops at once; the others' next
    collective then fails, so every rank ends with a one-line error."""
    writer = coordinator.ranks.is_writer
    for node in nodes:
        if only is not None and node.group != only:
            continue
        action = None
        if writer:
            action = _action(node, first, force)
            print(f"  {node.name:<28} {action}", flush=True)
        action = coordinator.agree(action, node.name)
        if dry_run or action == "up to date":
            continue
        _execute(node, action, writer)
        coordinator.barrier(node.name)


def run_pipeline(
    run: RunConfig,
    source: str = "run config",
    only: str | None = None,
    start: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    argv: Sequence[str] = (),
) -> Path:
    """Run every stage of ``run`` that is not up to date, then write the report (of each draw's run, with
    ``draws``); returns the run folder.

    ``only`` runs one stage group, ``start`` re-runs a group and everything after it, ``force``
    re-runs everything; ``dry_run`` prints the plan and runs nothing. With several devices or
    nodes in the run's ``trainer`` section, the ranks are started (or joined) here: ``argv`` is
    the command line that started this process, which further local ranks run again.
    """
    _check_group(only, "--only")
    _check_group(start, "--from")
    nodes = plan(run, source)
    first = GROUPS.index(start) if start else len(GROUPS)
    trainer = build_config(TrainerConfig, base=run.trainer, source=f"{source}, section 'trainer'")
    _check_before_running(run, nodes, source, only, first, force)
    if dry_run:
        print(f"run folder: {run.out}", flush=True)
        _walk(nodes, Coordinator.single(), only, first, force, dry_run=True)
        return run.out
    for node in nodes:  # a stage's own trainer settings too, before anything is written
        if isinstance(getattr(node.config, "trainer", None), DevicesConfig):
            check_machine(node.config.trainer)
    with session(trainer, argv) as coordinator:
        writer = coordinator.ranks.is_writer
        if writer:
            write_config(run.out, run)
            if run.draws:  # each draw's folder is a run of its own, which cfcl report and the benchmarks read
                for one in draw_runs(run, source):
                    write_config(one.out, one)
            print(
                f"run folder: {run.out}"
                + (f" ({coordinator.ranks.world_size} processes)" if coordinator.ranks.world_size > 1 else ""),
                flush=True,
            )
        _walk(nodes, coordinator, only, first, force, dry_run=False)
        if only in (None, layout.REPORT) and writer:
            from cfcl.report.report import run_report

            for one in draw_runs(run, source):
                run_report(one.out)
    return run.out


def load_run_config(path: str | Path, out: Path | None = None, overrides: list[str] = ()) -> tuple[RunConfig, str]:
    """A run config from a file or preset name, with ``--set`` overrides and ``--out``."""
    from cfcl.config import build_config
    from cfcl.presets import resolve_config_path

    resolved = resolve_config_path(path)
    extra = [*overrides, *([f"out={out}"] if out is not None else [])]
    return build_config(RunConfig, resolved, extra), f"run config {resolved}"


def demo(out: Path | None = None, overrides: list[str] = (), dry_run: bool = False, argv: Sequence[str] = ()) -> Path:
    """``cfcl run demo``, then the headline table and the report's path on the terminal."""
    run, source = load_run_config("demo", out, overrides)
    folder = run_pipeline(run, source, dry_run=dry_run, argv=argv)
    if not dry_run and is_writer():
        from cfcl.report.summary import print_headline

        print_headline(folder)
        print(f"report: {layout.RunLayout(folder).report / layout.INDEX}")
    return folder
