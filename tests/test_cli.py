import argparse
import re
import subprocess
import sys

import pytest

from cfcl import __version__
from cfcl.cli import build_parser, main
from cfcl.config import build_config, config_dict
from cfcl.pipeline.plan import plan
from cfcl.pipeline.run import load_run_config
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


def _leaf_helps(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words, help text) of every command without subcommands, the text's lines joined."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_helps(sub, (*words, name))
    if words and not subs:
        yield words, " ".join(parser.format_help().split())


# ``--set KEY=VALUE`` in a help text, with the command it belongs to when the text names one
# (``cfcl cf classifier --set parent=sex``); the KEY=VALUE metavar is not an example.
EXAMPLE = re.compile(r"(?:cfcl ((?:[a-z]+ )+?)(?:--(?!set )[\w-]+ [^\s-]\S* )*)?--set (?!KEY=VALUE)([\w.]+=[^\s)]+)")


def test_every_help_example_is_accepted_by_the_config_of_its_command(tmp_path):
    stages = {command.words: command for command in STAGES}
    examples = []
    for words, text in _leaf_helps(build_parser()):
        found = [(tuple(m[1].split()) if m[1] else words, m[2]) for m in EXAMPLE.finditer(text)]
        assert found or words not in stages, f"cfcl {' '.join(words)} --help shows no --set example"
        examples += found
    assert len({words for words, _ in examples}) >= len(STAGES) + 2  # every stage command, run and demo
    for words, example in examples:
        if words in stages:
            model = stages[words].load().config
            inputs = {k: str(tmp_path) for k, f in model.model_fields.items() if f.is_required()}  # --data and the like
            default = build_config(model, base=inputs)
            changed = build_config(model, base=inputs, overrides=[example])
        else:
            assert words in (("run",), ("demo",)), f"cfcl {' '.join(words)}: --set {example} has no config to check"
            default, changed = (load_run_config("demo", tmp_path, extra)[0] for extra in ([], [example]))
            plan(changed)
        assert config_dict(changed) != config_dict(default), f"cfcl {' '.join(words)} --set {example} changes nothing"


def _stand_in_inputs(command) -> list[str]:
    """--set of each key a stage needs from the command line (its input folders), to a folder that does not exist."""
    model = command.load().config
    return [f"--set={key}=nowhere" for key, field in model.model_fields.items() if field.is_required()]


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("cfcl: error: ") and err.count("\n") == 1, err
    for name in names:
        assert name in err, (name, err)
    return err


@pytest.mark.parametrize("command", STAGES, ids=lambda c: " ".join(c.words))
def test_an_out_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys, command):
    file = tmp_path / "FILE"
    file.write_text("not a folder")
    for out in (file, file / "sub"):
        assert main([*command.words, "--out", str(out), *_stand_in_inputs(command)]) == 2
        _one_line_error(capsys, f"--out {out} is not a folder", "expected a folder")
    assert list(tmp_path.iterdir()) == [file] and file.read_text() == "not a folder"


def test_a_run_folder_that_is_a_file_is_refused_also_by_dry_run(tmp_path, capsys):
    file = tmp_path / "FILE"
    file.write_text("not a folder")
    for argv in (["run", "demo"], ["run", "demo", "--dry-run"], ["demo", "--dry-run"]):
        for out in (file, file / "run"):
            assert main([*argv, "--out", str(out)]) == 2
            _one_line_error(capsys, f"run folder {out} (--out, or 'out' in the run config) is not a folder")
    assert list(tmp_path.iterdir()) == [file]


def test_run_mistakes_are_named_in_the_run_configs_words_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    for dry in ([], ["--dry-run"]):
        assert main(["run", "padchest", "--out", str(out), *dry]) == 2
        err = _one_line_error(capsys, "config key 'data.prepare.root' is not set: pass --set data.prepare.root=DIR")
        assert "--root" not in err
        nowhere = tmp_path / "nowhere"
        assert main(["run", "padchest", "--out", str(out), "--set", f"data.prepare.root={nowhere}", *dry]) == 2
        _one_line_error(capsys, "section 'data.prepare'", f"dataset root {nowhere} (config key 'root') is not a folder")
        # a typo in a section the run does not use (the demo makes its data with data.synth)
        assert main(["run", "demo", "--out", str(out), "--set", "data.prepare.rooot=/x", *dry]) == 2
        _one_line_error(capsys, "section 'data.prepare'", "unknown key 'rooot'", "allowed here: ", "root")
    assert not out.exists()
