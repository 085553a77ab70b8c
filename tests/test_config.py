import pytest
from pydantic import Field

from cfcl.config import StrictModel, build_config, config_hash, parse_overrides
from cfcl.errors import ConfigError
from cfcl.presets import resolve_config_path


class Inner(StrictModel):
    n_train: int = Field(100, ge=0)
    name: str = "a"


class Outer(StrictModel):
    data: Inner = Inner()
    lr: float = 1e-3
    fractions: list[float] = [0.1, 1.0]


def test_defaults_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  n_train: 5\nlr: 0.5\n")
    cfg = build_config(Outer, path, ["data.name=b", "fractions=[0.25]"])
    assert cfg.data.n_train == 5 and cfg.data.name == "b"
    assert cfg.lr == 0.5 and cfg.fractions == [0.25]


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  n_trian: 5\n")
    with pytest.raises(ConfigError) as err:
        build_config(Outer, path)
    msg = str(err.value)
    assert "data.n_trian" in msg and str(path) in msg and "n_train" in msg
    assert "\n" not in msg


def test_invalid_value_names_key():
    with pytest.raises(ConfigError, match="data.n_train"):
        build_config(Outer, None, ["data.n_train=-3"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="'lr'"):
        build_config(Outer, None, ["lr.x=1"])
    with pytest.raises(ConfigError, match="not a section"):
        build_config(Outer, None, ["lr=1", "lr.x=1"])


def test_missing_or_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(Outer, tmp_path / "none.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(Outer, bad)


def test_config_hash_tracks_values():
    assert config_hash(Outer()) == config_hash(Outer())
    assert config_hash(Outer()) != config_hash(Outer(lr=0.1))


def test_another_arch_starts_from_empty_arch_kwargs(tmp_path):
    from cfcl.contrastive.config import PretrainConfig

    base = {"data": "store", "encoder": {"arch": "small", "arch_kwargs": {"width": 16, "blocks": [1, 1, 1, 1]}}}
    (tmp_path / "vit.yaml").write_text("encoder: {arch: vit, arch_kwargs: {depth: 2}}\n")
    from_file = build_config(PretrainConfig, tmp_path / "vit.yaml", base=base)
    assert from_file.encoder.arch_kwargs == {"depth": 2}
    from_cli = build_config(PretrainConfig, overrides=["encoder.arch=vit"], base=base)
    assert (from_cli.encoder.arch, from_cli.encoder.arch_kwargs) == ("vit", {})
    same_arch = build_config(PretrainConfig, overrides=["encoder.arch=small", "encoder.arch_kwargs.width=8"], base=base)
    assert same_arch.encoder.arch_kwargs == {"width": 8, "blocks": [1, 1, 1, 1]}


def test_a_file_builds_on_a_preset_or_another_file_and_its_own_keys_win(tmp_path):
    from cfcl.contrastive.config import PretrainConfig

    (tmp_path / "base.yaml").write_text(
        "preset: pretrain_benchmark\nlr: 0.01\nencoder: {arch: vit, arch_kwargs: {depth: 2}}\n"
    )
    (tmp_path / "mine.yaml").write_text("preset: base.yaml\nlr: 0.02\n")  # a path relative to this file's folder
    mine = build_config(PretrainConfig, tmp_path / "mine.yaml", base={"data": "store"})
    shipped = build_config(PretrainConfig, resolve_config_path("pretrain"), base={"data": "store"})
    assert mine.lr == 0.02 and mine.encoder.arch_kwargs == {"depth": 2}  # a new arch starts from empty arch_kwargs
    assert mine.trainer.precision == "bf16-mixed"  # pretrain_benchmark's own key
    assert mine.batch_size == shipped.batch_size and mine.projection == shipped.projection  # pretrain's, two levels up


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preset: nosuch\n", "preset 'nosuch' is neither a shipped preset nor a file"),
        ("preset: ''\n", "'preset' must name a preset or a file, got ''"),
        ("preset: loop.yaml\n", "preset 'loop.yaml' builds on itself (loop.yaml -> loop.yaml)"),
    ],
)
def test_a_preset_that_is_missing_empty_or_circular_is_a_one_line_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        build_config(Outer, path)
    assert str(err.value) == f"config file {path}: {message}"
