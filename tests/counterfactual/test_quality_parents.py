"""Counterfactual quality of any discrete parent: a judge of sex, ``cf evaluate`` on [sex] against the
true sex counterfactuals and on [domain, sex] jointly, and the bad input refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cfcl.cli import main
from cfcl.counterfactual.classifier.model import load_classifier
from cfcl.counterfactual.generator.checkpoint import save_generator
from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
from cfcl.counterfactual.parents import parent_specs
from cfcl.data.store import ImageStore
from support.cf_stores import make_store

TRAIN = [
    "--set",
    "trainer.max_epochs=8",
    "--set",
    "trainer.progress_bar=false",
    "--set",
    "batch_size=16",
    "--set",
    "lr=0.01",
    "--set",
    "arch_kwargs.width=4",
]
ARCH = HVAEArch(widths=[4, 8], blocks=[1, 1], latent_channels=2, stochastic_max_res=8)


@pytest.fixture(scope="module")
def sexed(tmp_path_factory):
    """A gamma store whose second sex darkens the top half, its true scanner and sex counterfactuals, a judge
    of each, and untrained generators conditioned on the scanner alone and on scanner and sex."""
    root = tmp_path_factory.mktemp("sexq")
    store = make_store(root / "store", sexes=("F", "M"), sex_shade=0.3)
    for name, parent in (("judge", "domain"), ("judge_sex", "sex")):
        assert (
            main(
                [
                    "cf",
                    "classifier",
                    "--config",
                    "cf_judge",
                    "--data",
                    str(store.path),
                    "--out",
                    str(root / name),
                    *TRAIN,
                    "--set",
                    f"parent={parent}",
                ]
            )
            == 0
        )
    for name, parents in (("hvae", ["domain"]), ("hvae_sex", ["domain", "sex"])):
        torch.manual_seed(0)
        save_generator(
            root / name,
            HVAE(16, ARCH, parent_specs(store, parents, store.indices("train"))),
            {"domains": store.domains},
        )
    return root, store


def evaluate(root, generator, judges, out, *extra):
    return main(
        [
            "cf",
            "evaluate",
            "--data",
            str(root / "store"),
            "--generator",
            str(root / generator),
            "--set",
            f"judge=[{', '.join(str(root / j) for j in judges)}]",
            "--out",
            str(out),
            "--set",
            "n_per_domain=8",
            "--set",
            "batch_size=10",
            "--set",
            "null_steps=2",
            *extra,
        ]
    )


def test_a_sex_classifier_reads_the_sex(sexed):
    root, store = sexed
    judge, info = load_classifier(root / "judge_sex")
    assert (info["role"], info["parent"], info["values"], info["trained_values"]) == (
        "judge",
        "sex",
        ["F", "M"],
        [0, 1],
    )
    assert info["val_balanced_accuracy"] >= 0.9 and info["test_balanced_accuracy"] >= 0.9
    # the same patient drawn as either sex (any scanner): the judge follows the sex, not the image's other content
    truth = ImageStore.open(root / "store" / "true_cf_sex")
    rows = truth.meta[truth.meta["split"] == "test"]
    with torch.no_grad():
        predicted = judge(torch.from_numpy(truth.images[rows["index"].to_numpy()]).float()[:, None] / 255).argmax(dim=1)
    assert (predicted.numpy() == rows["target_sex"].to_numpy()).mean() >= 0.9


def test_quality_of_sex_against_the_true_sex_counterfactuals(sexed, tmp_path):
    root, store = sexed
    assert evaluate(root, "store/true_cf_sex", ["judge_sex"], tmp_path / "q", "--set", "intervene=[sex]") == 0
    result = json.loads((tmp_path / "q" / "cf_quality.json").read_text())
    assert result["intervened"] == {"sex": ["F", "M"]} and result["true_cf"] == str(root / "store" / "true_cf_sex")
    train = store.meta[store.meta["split"] == "train"]["sex"].value_counts()
    assert result["rare_cell"] == min(("F", "M"), key=lambda s: (train[s], s)) and "rare_domain" not in result
    assert result["judge"]["path"].endswith("judge_sex/classifier.pt")
    # every evaluated image (8, 6 and 3 of the scanners) goes to the other sex once
    pairs = pd.read_csv(tmp_path / "q" / "pairs.csv").set_index("pair")
    assert list(pairs.index) == ["F->M", "M->F"] and pairs["n"].sum() == 17
    assert (pairs.loc["F->M", "source"], pairs.loc["F->M", "target"]) == (0, 1)
    assert (pairs.loc["M->F", "source"], pairs.loc["M->F", "target"]) == (1, 0)
    assert (
        (pairs["mae_cf"] == 0).all() and (pairs["mae_identity"] > 0.02).all() and (pairs["judge_accuracy"] >= 0.7).all()
    )
    assert (
        result["effectiveness"]["confusion"]["labels"] == ["F", "M"]
        and result["effectiveness"]["balanced_accuracy"] >= 0.85
    )
    assert result["truth"]["ratio"] == 0 and result["reversibility"]["mae"] == 0 and result["composition"]["mae_2"] == 0
    assert set(result["targets"]) == {
        "effectiveness",
        "mae_ratio",
        "mae_ratio_rare_as_source",
        "mae_ratio_rare_as_target",
        "reversibility",
    }
    assert all(result["targets"][name]["pass"] for name in ("mae_ratio", "mae_ratio_rare_as_source", "reversibility"))
    # the scanner's truth is no sex counterfactual: a store of another parent is refused
    assert evaluate(root, "store/true_cf", ["judge_sex"], tmp_path / "x", "--set", "intervene=[sex]") == 2


def test_joint_quality_judges_each_parent_and_has_no_truth(sexed, tmp_path):
    root, store = sexed
    assert (
        evaluate(
            root,
            "hvae_sex",
            ["judge_sex", "judge"],
            tmp_path / "q",
            "--set",
            "intervene=[domain, sex]",
            "--set",
            "n_per_domain=2",
        )
        == 0
    )
    result = json.loads((tmp_path / "q" / "cf_quality.json").read_text())
    assert result["intervened"] == {"domain": store.domains, "sex": ["F", "M"]}
    assert result["truth"] is None and result["true_cf"] is None  # the benchmark has no joint truth
    assert set(result["effectiveness"]) == {"domain", "sex"} and set(result["judge"]) == {"domain", "sex"}
    assert result["effectiveness"]["sex"]["confusion"]["labels"] == ["F", "M"]
    assert {"effectiveness_domain", "effectiveness_sex", "reversibility"} == set(result["targets"])
    pairs = pd.read_csv(tmp_path / "q" / "pairs.csv")
    assert {"judge_accuracy_domain", "judge_accuracy_sex"} <= set(pairs.columns) and "judge_accuracy" not in pairs
    # cells are scanner x sex over the 3 in-distribution scanners; every source goes to the 5 other cells
    cells = [f"{d}_{s}" for d in ("major", "middle", "rare") for s in ("F", "M")]
    sources = pairs["pair"].str.split("->").str[0]
    assert set(sources) <= set(cells) and (pairs.groupby(sources).size() == 5).all()
    assert all(a != b and b in cells for a, b in pairs["pair"].str.split("->"))


def test_bad_parents_and_judges_are_one_line(sexed, tmp_path, capsys):
    root, _ = sexed

    def refused(*args) -> str:
        assert evaluate(root, *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and not (tmp_path / "x").exists()
        return err

    err = refused("hvae", ["judge_sex"], tmp_path / "x", "--set", "intervene=[sex]")
    assert f"cannot intervene on parent 'sex': generator {root / 'hvae'} was conditioned on domain only" in err
    assert "is a judge of 'domain'" in refused("hvae_sex", ["judge"], tmp_path / "x", "--set", "intervene=[sex]")
    assert "no judge of parent 'sex'" in refused(
        "hvae_sex", ["judge"], tmp_path / "x", "--set", "intervene=[domain, sex]"
    )
    assert "a second judge of 'sex'" in refused(
        "hvae_sex", ["judge_sex", "judge_sex"], tmp_path / "x", "--set", "intervene=[sex]"
    )


def test_a_classifier_of_a_parent_with_one_value_is_refused(tmp_path, capsys):
    store = make_store(tmp_path / "store", true_cf=False, sexes=("F",))
    assert (
        main(["cf", "classifier", "--data", str(store.path), "--out", str(tmp_path / "c"), "--set", "parent=sex"]) == 2
    )
    err = capsys.readouterr().err
    assert f"cannot classify parent 'sex' of image store {store.path}: it has one value (F) in split train" in err
    assert err.count("\n") == 1 and not (tmp_path / "c").exists()
    assert (
        main(["cf", "classifier", "--data", str(store.path), "--out", str(tmp_path / "c"), "--set", "parent=age"]) == 2
    )
    assert "parent 'age' is not a column" in capsys.readouterr().err
    assert np.array_equal(store.meta["sex"].unique(), ["F"])
