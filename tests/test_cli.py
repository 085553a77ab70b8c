import subprocess
import sys

from cfcl import __version__
from cfcl.cli import build_parser, main
from cfcl.registry import STAGES


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "cfcl.cli", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"cfcl {__version__}"
    parser = build_parser()
    help_text = parser.format_help()
    for command in STAGES:
        assert command.words[0] in help_text


def test_every_stage_command_has_help(capsys):
    for command in STAGES:
        try:
            main([*command.words, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0
        assert "--config" in capsys.readouterr().out


def test_config_errors_are_one_line(tmp_path, capsys):
    code = main(["data", "synth", "--out", str(tmp_path / "x"), "--set", "no_such_key=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("cfcl: error:") and "no_such_key" in err and "\n" not in err
