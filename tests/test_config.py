import pytest
from pydantic import Field

from cfcl.config import StrictModel, build_config, config_hash, parse_overrides
from cfcl.errors import ConfigError


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
