"""The ``cfcl`` command line: parses arguments and delegates; no logic lives here.

Every stage command takes ``--config FILE`` (a path or a preset name from ``configs/``),
``--set dotted.key=value`` (repeatable) and ``--out DIR``; a few flags are shorthands for
config keys (``--data STORE`` is ``--set data=STORE``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cfcl import __version__
from cfcl.errors import CfclError


@dataclass(frozen=True)
class Flag:
    """A command-line shorthand for one config key."""

    name: str
    key: str
    help: str
    repeat: bool = False


@dataclass(frozen=True)
class StageCommand:
    """One stage: its config model and the function that runs it, both as ``module:attribute``."""

    words: tuple[str, ...]
    help: str
    config: str
    runner: str
    flags: tuple[Flag, ...] = field(default_factory=tuple)


STAGES: tuple[StageCommand, ...] = (
    StageCommand(
        ("data", "synth"),
        "generate the synthetic multi-scanner radiograph benchmark (with its true counterfactuals)",
        "cfcl.data.synthetic.config:SynthConfig",
        "cfcl.data.synthetic.generate:run",
    ),
)


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _stage_parser(sub: argparse._SubParsersAction, command: StageCommand) -> None:
    parser = sub.add_parser(command.words[-1], help=command.help, description=command.help)
    parser.add_argument("--config", help="YAML config file or preset name (see configs/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set data.n_train=2000 (repeatable)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder of this stage")
    parser.add_argument("--force", action="store_true", help="overwrite an output made with another config")
    for flag in command.flags:
        parser.add_argument(flag.name, dest=f"flag:{flag.key}", help=flag.help, action="append" if flag.repeat else None)
    parser.set_defaults(handler=_run_stage, command=command)


def _run_stage(args: argparse.Namespace) -> None:
    from cfcl.config import build_config
    from cfcl.presets import resolve_config_path

    command: StageCommand = args.command
    overrides = list(args.overrides)
    for flag in command.flags:
        value = getattr(args, f"flag:{flag.key}")
        if value is not None:
            overrides.insert(0, f"{flag.key}={value}")
    path = resolve_config_path(args.config) if args.config else None
    config = build_config(_load(command.config), path, overrides)
    _load(command.runner)(config, out=args.out, force=args.force)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfcl", description="Counterfactual contrastive learning for medical imaging."
    )
    parser.add_argument("--version", action="version", version=f"cfcl {__version__}")
    top = parser.add_subparsers(dest="group", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    group_help = {
        "data": "build image stores: the synthetic benchmark, or a real dataset",
        "cf": "counterfactual generator: train, classifiers, fine-tune, generate, evaluate",
    }
    for command in STAGES:
        if len(command.words) == 1:
            _stage_parser(top, command)
            continue
        group = command.words[0]
        if group not in groups:
            gp = top.add_parser(group, help=group_help.get(group), description=group_help.get(group))
            groups[group] = gp.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
        _stage_parser(groups[group], command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        args.handler(args)
    except CfclError as exc:
        print(f"cfcl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cfcl: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
