"""The ``cfcl`` command line: parses arguments and delegates; no logic lives here.

Every stage command takes ``--config FILE`` (a path or a preset name from ``configs/stage/``),
``--set dotted.key=value`` (repeatable) and ``--out DIR``; a few flags are shorthands for
config keys (``--data STORE`` is ``--set data=STORE``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfcl import __version__
from cfcl.errors import CfclError
from cfcl.registry import STAGES, StageCommand, check_stage
from cfcl.training import share_busy_cpus


def _stage_parser(sub: argparse._SubParsersAction, command: StageCommand) -> None:
    parser = sub.add_parser(command.words[-1], help=command.help, description=command.help)
    parser.add_argument("--config", help="YAML config file or preset name (see configs/stage/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config value, e.g. --set {command.example} (repeatable)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder of this stage")
    parser.add_argument(
        "--force",
        action="store_true",
        help="run even when up to date, starting afresh; overwrites an output made with another config",
    )
    for flag in command.flags:
        if flag.const is not None:
            parser.add_argument(
                flag.name, dest=f"flag:{flag.key}", help=flag.help, action="store_const", const=flag.const
            )
            continue
        parser.add_argument(
            flag.name,
            dest=f"flag:{flag.key}",
            help=flag.help,
            metavar=flag.key.upper(),
            action="append" if flag.repeat else None,
        )
    parser.set_defaults(handler=_run_stage, command=command)


def _run_stage(args: argparse.Namespace) -> None:
    from cfcl.config import build_config
    from cfcl.distributed import run_on_ranks
    from cfcl.presets import resolve_config_path

    command: StageCommand = args.command
    overrides = list(args.overrides)
    for flag in command.flags:
        value = getattr(args, f"flag:{flag.key}")
        if value is not None:
            overrides.insert(0, f"{flag.key}={value}")
    path = resolve_config_path(args.config) if args.config else None
    code = command.load()
    config = build_config(code.config, path, overrides)
    check_stage(command, config, args.out)
    run_on_ranks(code.run, config, args.out, args.force, args.argv)


def _run(args: argparse.Namespace) -> None:
    from cfcl.pipeline.run import load_run_config, run_pipeline

    run, source = load_run_config(args.config, args.out, args.overrides)
    run_pipeline(run, source, only=args.only, start=args.start, force=args.force, dry_run=args.dry_run, argv=args.argv)


def _demo(args: argparse.Namespace) -> None:
    from cfcl.pipeline.run import demo

    demo(args.out, args.overrides, dry_run=args.dry_run, argv=args.argv)


def _pipeline_parsers(top: argparse._SubParsersAction) -> None:
    from cfcl.pipeline.plan import GROUPS

    run = top.add_parser(
        "run",
        help="run every stage of a run config (cached, resumable)",
        description="Run data -> generator -> classifiers -> fine-tuning -> counterfactuals -> "
        "quality -> pretraining -> evaluation -> report, skipping stages that are up to date.",
    )
    run.add_argument("config", help="run config file or preset name (demo, benchmark, padchest, ...)")
    run.add_argument("--only", choices=GROUPS, help="run this stage only")
    run.add_argument("--from", dest="start", choices=GROUPS, help="re-run this stage and all after it")
    run.add_argument("--force", action="store_true", help="re-run every stage")
    demo = top.add_parser(
        "demo",
        help="the whole pipeline on the synthetic benchmark (configs/run/demo.yaml)",
        description="cfcl run demo: SimCLR, SimCLR+, CF-SimCLR and the oracle on the synthetic "
        "benchmark; prints the headline table and the report's path.",
    )
    for parser, handler in ((run, _run), (demo, _demo)):
        parser.add_argument("--out", type=Path, help="run folder (default: the config's 'out')")
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a run-config value, e.g. --set seeds=[0,1,2] (repeatable)",
        )
        parser.add_argument("--dry-run", action="store_true", help="print the plan and run nothing")
        parser.set_defaults(handler=handler)


def _report(args: argparse.Namespace) -> None:
    from cfcl.report.report import run_report

    run_report(args.run_dir, args.out)


def _report_parser(top: argparse._SubParsersAction) -> None:
    report = top.add_parser(
        "report",
        help="write a run's self-contained index.html and summary.md",
        description="Gather a run folder's results, figures, configs and timings into "
        "RUN_DIR/report/index.html (opens offline) and summary.md; a partial run says what is absent.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder (holding data/, pretrain/, eval/...)")
    report.add_argument("--out", type=Path, help="report folder (default: RUN_DIR/report)")
    report.set_defaults(handler=_report)


def _apply(args: argparse.Namespace) -> None:
    from cfcl.counterfactual.generator.apply import apply, parse_parent

    given = dict(parse_parent(text) for text in args.parents)
    for line in apply(
        args.generator,
        args.images,
        args.targets,
        args.source,
        args.out,
        given=given,
        data=args.data,
        laterality=args.laterality,
        grid=args.grid,
    ):
        print(line)


def _apply_parser(cf: argparse._SubParsersAction) -> None:
    apply = cf.add_parser(
        "apply",
        help="counterfactuals of your own PNG/JPEG/DICOM files on other scanners",
        description="Decode IMAGE files as cfcl data prepare decoded the generator's training store, "
        "and write OUT/<file>_to_<scanner>.png for every --to scanner. The source scanner is not "
        "guessed: name it with --from; other parents with --parent (a continuous one defaults to "
        "its training mean). Prints the decoding and the parents it assumed.",
    )
    apply.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or DICOM file")
    apply.add_argument(
        "--generator", required=True, type=Path, help="generator folder (cfcl cf train / finetune) or generator.pt"
    )
    apply.add_argument(
        "--to",
        dest="targets",
        required=True,
        action="append",
        metavar="SCANNER",
        help="target scanner, by name or code (repeatable)",
    )
    apply.add_argument("--from", dest="source", required=True, metavar="SCANNER", help="scanner the files come from")
    apply.add_argument(
        "--parent",
        dest="parents",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another parent of the files, e.g. --parent sex=F (repeatable)",
    )
    apply.add_argument("--data", type=Path, help="the generator's training store (default: the one its folder records)")
    apply.add_argument(
        "--laterality",
        default="",
        choices=["", "L", "R"],
        help="breast side, for mammography stores that flip right breasts",
    )
    apply.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    apply.add_argument("--grid", action="store_true", help="also write grid.png: per file, the input then each target")
    apply.set_defaults(handler=_apply)


def _export(args: argparse.Namespace) -> None:
    from cfcl.contrastive.export import export_encoder

    print(export_encoder(args.encoder, args.format, args.out))


def _export_parser(top: argparse._SubParsersAction) -> None:
    export = top.add_parser(
        "export",
        help="write a pretrained encoder as a torchvision, TorchScript or ONNX file",
        description="Write the encoder of a pretrain folder as a file that loads without cfcl "
        "(docs/python.md): a torchvision ResNet state dict, or a TorchScript / ONNX model taking "
        "[B, 1, H, W] images in [0, 1]. ONNX needs pip install 'cfcl[export]'.",
    )
    export.add_argument("--encoder", required=True, type=Path, help="pretrain folder (cfcl pretrain) or encoder.pt")
    export.add_argument("--format", required=True, help="torchvision, torchscript or onnx")
    export.add_argument("--out", required=True, type=Path, help="file to write")
    export.set_defaults(handler=_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfcl", description="Counterfactual contrastive learning for medical imaging."
    )
    parser.add_argument("--version", action="version", version=f"cfcl {__version__}")
    top = parser.add_subparsers(dest="group", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    group_help = {
        "data": "build image stores: the synthetic benchmark, or a real dataset",
        "cf": "counterfactual generator: train, classifiers, fine-tune, generate, evaluate, apply to your files",
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
    _apply_parser(groups["cf"])
    _pipeline_parsers(top)
    _report_parser(top)
    _export_parser(top)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    share_busy_cpus()  # only for commands that work: --help and usage errors answer at once
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
