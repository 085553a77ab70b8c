"""Shipped presets: run presets in configs/run, stage presets in configs/stage, each found by its name
alone, each stage preset a valid config of its stage, and all of them shipped in the package."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

import cfcl
from cfcl.cli import main
from cfcl.config import build_config, read_yaml
from cfcl.presets import preset_names, resolve_config_path
from cfcl.registry import STAGES
from support.paths import REPO

CONFIGS = Path(cfcl.__file__).parent / "configs"
PYPROJECT = REPO / "pyproject.toml"
# A stage preset's name starts with its stage's: prepare_padchest is a `cfcl data prepare` config.
STAGE_OF_PREFIX = {
    "synth": ("data", "synth"),
    "prepare": ("data", "prepare"),
    "cf_guide": ("cf", "classifier"),
    "cf_judge": ("cf", "classifier"),
    "cf_train": ("cf", "train"),
    "cf_finetune": ("cf", "finetune"),
    "cf_generate": ("cf", "generate"),
    "cf_evaluate": ("cf", "evaluate"),
    "pretrain": ("pretrain",),
    "evaluate": ("evaluate",),
}


def test_a_name_is_a_run_or_a_stage_preset_never_both_and_every_file_is_one_of_them():
    run, stage = preset_names("run"), preset_names("stage")
    assert all(read_yaml(resolve_config_path(name))["methods"] for name in run)
    assert {"demo", "benchmark", "padchest"} <= set(run) and {"cf_train", "pretrain", "prepare_padchest"} <= set(stage)
    assert not set(run) & set(stage)
    assert sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")) == sorted(
        [f"run/{name}.yaml" for name in run] + [f"stage/{name}.yaml" for name in stage]
    )
    assert resolve_config_path("demo") == CONFIGS / "run" / "demo.yaml"
    assert resolve_config_path("cf_train") == CONFIGS / "stage" / "cf_train.yaml"


def test_a_file_is_read_before_a_preset_and_an_unknown_name_is_a_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("out: mine\n")
    assert resolve_config_path("demo.yaml") == Path("demo.yaml")
    assert resolve_config_path("run/demo") == Path("run/demo")  # a path with a folder is never a preset name
    assert main(["run", "nosuch", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "cfcl: error: config file nosuch does not exist"


def test_every_stage_preset_is_a_valid_config_of_its_stage(tmp_path):
    commands = {command.words: command for command in STAGES}
    for name in preset_names("stage"):
        words = next(w for prefix, w in STAGE_OF_PREFIX.items() if name == prefix or name.startswith(f"{prefix}_"))
        model = commands[words].load().config
        required = {key: str(tmp_path) for key, field in model.model_fields.items() if field.is_required()}
        build_config(model, resolve_config_path(name), base=required)  # unknown keys and bad values raise


def test_the_package_data_ships_every_preset():
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["cfcl"]
    for path in CONFIGS.rglob("*.yaml"):
        relative = PurePosixPath(path.relative_to(CONFIGS.parent).as_posix())
        assert any(relative.match(pattern) for pattern in patterns), relative
