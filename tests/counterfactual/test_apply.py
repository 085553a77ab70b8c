"""`cfcl cf apply`: counterfactuals of a user's PNG/DICOM files, decoded as the generator's store was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cfcl
from cfcl.cli import main
from cfcl.counterfactual.generator.apply import grid_figure
from cfcl.counterfactual.parents import ParentSpec
from cfcl.data.imageio import DecodeOptions, decode
from support.api import scanner_store, tiny_generator
from support.dicom import write_dicom

SEX_AGE = (
    ParentSpec("sex", "discrete", 2, (0, 1), ("F", "M"), categories=("F", "M")),
    ParentSpec("age", "continuous", mean=52.5, std=12.0),
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("apply")
    store = scanner_store(root / "data")
    tiny_generator(root / "gen", store)
    tiny_generator(root / "gen_sex_age", store, SEX_AGE)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30)).astype(np.uint8)).save(root / "chest.png")
    write_dicom(
        root / "scan.dcm", rng.integers(100, 3000, (32, 48)).astype(np.uint16), WindowCenter=1500, WindowWidth=3000
    )
    return root, store


def read_png(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img)


def test_apply_writes_one_png_per_file_and_target_and_says_what_it_assumed(files, tmp_path, capsys):
    root, store = files
    inputs = [root / "chest.png", root / "scan.dcm"]
    args = [
        "cf",
        "apply",
        "--generator",
        str(root / "gen"),
        "--from",
        "cr_plate",
        "--to",
        "portable",
        "--to",
        "0",
        "--grid",
        "--out",
        str(tmp_path / "out"),
        *map(str, inputs),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "domain=cr_plate (--from)" in printed and f"like store {store.path}: 16x16" in printed
    assert "prepare's defaults" in printed
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "chest_to_flatpanel.png",
        "chest_to_portable.png",
        "grid.png",
        "scan_to_flatpanel.png",
        "scan_to_portable.png",
    ]
    generator = cfcl.load_generator(root / "gen")
    x = torch.from_numpy(np.stack([decode(p, DecodeOptions(16, 16)) for p in inputs])).float().div(255).unsqueeze(1)
    for target in ("portable", "flatpanel"):
        expected = np.rint(generator.counterfactual(x, {"domain": "cr_plate"}, target)[:, 0].numpy() * 255).astype(
            np.uint8
        )
        assert np.array_equal(read_png(tmp_path / "out" / f"scan_to_{target}.png"), expected[1])
        assert np.array_equal(read_png(tmp_path / "out" / f"chest_to_{target}.png"), expected[0])
    with Image.open(tmp_path / "out" / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > grid.height  # 3 columns of 2 files, with titles and row names


def test_the_grid_names_the_source_and_target_scanners():
    """Column titles say which scanner each column is, row names which file; the cells are the images given."""
    columns = [torch.rand(2, 16, 16) for _ in range(3)]
    figure = grid_figure(columns, ["chest", "scan"], "cr_plate", ["portable", "flatpanel"])
    axes = np.array(figure.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["input (cr_plate)", "as portable", "as flatpanel"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["chest", "scan"]
    assert np.array_equal(axes[1, 2].images[0].get_array(), columns[2][1].numpy())


def test_apply_refuses_a_scanner_the_generator_was_not_trained_on(files, tmp_path, capsys):
    root, _ = files
    for flag in ("--to", "--from"):
        other = "--from" if flag == "--to" else "--to"
        args = [
            "cf",
            "apply",
            "--generator",
            str(root / "gen"),
            flag,
            "legacy",
            other,
            "portable",
            "--out",
            str(tmp_path / "out"),
            str(root / "chest.png"),
        ]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "not trained on scanner 'legacy' (it knows: flatpanel, cr_plate, portable)" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_apply_takes_other_parents_from_flags_and_a_continuous_one_defaults_to_its_training_mean(
    files, tmp_path, capsys
):
    root, _ = files
    base = [
        "cf",
        "apply",
        "--generator",
        str(root / "gen_sex_age"),
        "--from",
        "flatpanel",
        "--to",
        "portable",
        "--out",
        str(tmp_path / "out"),
        str(root / "chest.png"),
    ]
    assert main(base) == 2
    assert "parent 'sex' is not given: pass --parent sex=VALUE (one of F, M)" in capsys.readouterr().err
    assert main([*base, "--parent", "sex=X"]) == 2
    assert "parent 'sex' value 'X' (it knows: F, M)" in capsys.readouterr().err
    assert main([*base, "--parent", "sex=M"]) == 0
    assert "sex=M (--parent); age=52.5 (training mean; set it with --parent age=VALUE)" in capsys.readouterr().out
    generator = cfcl.load_generator(root / "gen_sex_age")
    x = cfcl.read_images([root / "chest.png"], root / "data")
    older = generator.counterfactual(x, {"domain": "flatpanel", "sex": "M", "age": 80}, "portable")
    assert main([*base, "--parent", "sex=M", "--parent", "age=80"]) == 0
    assert np.array_equal(
        read_png(tmp_path / "out" / "chest_to_portable.png"), np.rint(older[0, 0].numpy() * 255).astype(np.uint8)
    )
    assert main([*base, "--parent", "sex=M", "--parent", "height=2"]) == 2
    assert "has no parent(s) height" in capsys.readouterr().err


def test_apply_needs_the_generators_own_store(files, tmp_path, capsys):
    root, _ = files
    other = scanner_store(tmp_path / "other", seed=5)
    base = [
        "cf",
        "apply",
        "--to",
        "portable",
        "--from",
        "flatpanel",
        "--out",
        str(tmp_path / "out"),
        str(root / "chest.png"),
    ]
    assert main([*base, "--generator", str(root / "gen"), "--data", str(other.path)]) == 2
    assert "is not the store generator" in capsys.readouterr().err
    assert main([*base, "--generator", str(root / "gen" / "generator.pt"), "--data", str(root / "data")]) == 0
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "generator.pt").write_bytes((root / "gen" / "generator.pt").read_bytes())
    assert main([*base, "--generator", str(lone)]) == 2
    assert "records no training store" in capsys.readouterr().err
