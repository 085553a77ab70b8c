"""``cfcl cf evaluate``: the perfect generator (true counterfactuals) passes, an identity generator
fails, hand-made generators give their known errors, and a judge that guided is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from cfcl import atomic
from cfcl.cli import main
from cfcl.counterfactual.classifier.model import build_classifier, classifier_file, load_classifier, save_classifier
from cfcl.counterfactual.config import QualityTargets
from cfcl.counterfactual.quality.inputs import Generator, open_intervention
from cfcl.counterfactual.quality.measure import measure, select_images
from cfcl.counterfactual.quality.summary import summarise
from cfcl.data.store import ImageStore
from cfcl.stage import fingerprint
from support.cf_stores import gamma_cf, make_store

TRAIN = [
    "--set",
    "trainer.max_epochs=12",
    "--set",
    "trainer.progress_bar=false",
    "--set",
    "batch_size=16",
    "--set",
    "lr=0.01",
    "--set",
    "patience=8",
]  # room to leave a plateau


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A gamma store with its true counterfactuals, a judge trained on it and an (untrained) guide."""
    root = tmp_path_factory.mktemp("cfq")
    store = make_store(root / "store")
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
                str(root / "judge"),
                *TRAIN,
                "--set",
                "arch_kwargs.width=4",
            ]
        )
        == 0
    )
    info = {
        "role": "guide",
        "parent": "domain",
        "values": store.domains,
        "trained_values": [0, 1, 2],
        "image_size": list(store.size),
        "seed": 1,
    }
    save_classifier(root / "guide.pt", build_classifier("cnn", 4, widths=[4]), info)
    return root, store


def evaluate(root, generator, judge, out, *extra):
    return main(
        [
            "cf",
            "evaluate",
            "--data",
            str(root / "store"),
            "--generator",
            str(generator),
            "--judge",
            str(judge),
            "--out",
            str(out),
            "--set",
            "n_per_domain=8",
            "--set",
            "batch_size=10",
            *extra,
        ]
    )


def test_true_counterfactuals_are_a_perfect_generator(setup):
    root, store = setup
    assert evaluate(root, root / "store" / "true_cf", root / "judge", root / "perfect") == 0
    result = json.loads((root / "perfect" / "cf_quality.json").read_text())
    assert result["evaluated_domains"] == ["major", "middle", "rare"] and result["rare_domain"] == "rare"
    assert result["n_images"] == {"major": 8, "middle": 6, "rare": 3}  # the test split holds 15, 6, 3
    assert len(result["pairs"]) == 6 and all(
        p["n"] == result["n_images"][p["pair"].split("->")[0]] for p in result["pairs"]
    )
    assert result["effectiveness"]["balanced_accuracy"] >= 0.95
    assert np.array(result["effectiveness"]["confusion"]["matrix"]).sum() == 17 * 2
    truth = result["truth"]
    assert truth["mae_cf"] == 0 and truth["ratio"] == 0 and truth["mae_identity"] > 0.05
    assert truth["rare_as_source"]["ratio"] == 0 and truth["rare_as_target"]["mae_identity"] > 0.05
    assert (
        result["reversibility"]["mae"] == 0
        and result["composition"]["mae_1"] == 0
        and result["composition"]["mae_10"] == 0
    )
    assert result["passed"] and all(t["pass"] for t in result["targets"].values())
    assert (root / "perfect" / "cf_grid.png").stat().st_size > 1000
    assert (root / "perfect" / "pairs.csv").read_text().startswith("pair,source,target,n,judge_accuracy")


def test_identity_and_exact_generators(setup):
    """``measure`` + ``summarise`` with hand-made generators of known quality."""
    root, store = setup
    judge, _ = load_classifier(root / "judge")
    rows = select_images(store, ["test"], [0, 1, 2], 6, seed=0)
    sources = store.meta["domain"].to_numpy()[rows]

    def parents(indices):
        return {"domain": torch.as_tensor(store.meta["domain"].to_numpy()[indices])}

    true_cf = ImageStore.open(root / "store" / "true_cf")
    scanner = open_intervention(store, ["domain"], [0, 1, 2])
    results = {}
    for name, cf_fn in (("identity", lambda x, pa, pa_star: x), ("exact", gamma_cf)):
        generator = Generator(cf_fn, parents, {"domain": [0, 1, 2]}, True, {"kind": name}, store.path)
        table, logits, composition = measure(
            generator, {"domain": judge}, store, rows, scanner, true_cf, 3, 7, torch.device("cpu")
        )
        assert len(table) == len(logits["domain"]) == 2 * len(rows) and composition.shape == (3, len(rows))
        results[name] = summarise(table, logits, composition, sources, scanner, 2, 3, QualityTargets())
    identity, exact = results["identity"], results["exact"]
    # the identity leaves every image in its source domain: the judge never sees the target
    assert identity["truth"]["ratio"] == pytest.approx(1.0) and identity["effectiveness"]["balanced_accuracy"] < 0.2
    assert identity["reversibility"]["mae"] == 0 and not identity["passed"]
    assert not identity["targets"]["mae_ratio"]["pass"] and identity["targets"]["reversibility"]["pass"]
    # the exact map differs from the stored truth only by uint8 rounding (at most half a grey level)
    assert exact["truth"]["mae_cf"] < 0.5 / 255 and exact["truth"]["ratio"] < 0.05
    assert exact["reversibility"]["mae"] < 1e-5 and exact["effectiveness"]["balanced_accuracy"] > 0.8
    assert all(exact["targets"][name]["pass"] for name in ("mae_ratio", "mae_ratio_rare_as_source", "reversibility"))
    by_pair = {p["pair"]: p for p in exact["pairs"]}
    assert set(by_pair) == {
        f"{a}->{b}" for a in ("major", "middle", "rare") for b in ("major", "middle", "rare") if a != b
    }


def test_guide_is_refused_as_judge(setup, capsys):
    root, store = setup
    assert evaluate(root, root / "store" / "true_cf", root / "guide.pt", root / "refused") == 2
    assert "role 'guide'; the judge never guides" in capsys.readouterr().err

    # a generator fine-tuned with this very judge (recorded as its guide) cannot be judged by it
    generator = root / "tuned"
    shutil.copytree(root / "store" / "true_cf", generator)
    judge_file = classifier_file(root / "judge")
    atomic.write_json(
        generator / "manifest.json",
        {
            "status": "complete",
            "fingerprint": "x",
            "inputs": {"guide": {"path": str(judge_file), "fingerprint": fingerprint(judge_file)}},
        },
    )
    assert evaluate(root, generator, root / "judge", root / "refused") == 2
    assert "guided the fine-tuning" in capsys.readouterr().err


def test_bad_input_is_one_line(setup, capsys):
    root, store = setup
    assert main(["cf", "evaluate", "--data", str(root / "store"), "--out", str(root / "x")]) == 2
    assert "--generator" in capsys.readouterr().err
    # the judge never saw the held-out scanner
    assert evaluate(root, root / "store" / "true_cf", root / "judge", root / "x", "--set", "include_ood=true") == 2
    assert "never saw domain(s) ood" in capsys.readouterr().err
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert evaluate(root, root / "store" / "true_cf", corrupt, root / "x") == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and len(err.strip().splitlines()) == 1
    other = make_store(root / "other", seed=1)
    assert evaluate(root, other.path / "true_cf", root / "judge", root / "x") == 2
    assert "was made from store" in capsys.readouterr().err


@pytest.mark.slow
def test_model_generator_path(setup, capsys):
    """An (untrained) HVAE checkpoint goes through abduction and prediction; unseen targets are refused."""
    from cfcl.counterfactual.generator.checkpoint import save_generator
    from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
    from cfcl.counterfactual.generator.inference import counterfactual
    from cfcl.counterfactual.parents import ParentSpec, intervene, parent_specs, parents_from_store

    root, store = setup
    torch.manual_seed(0)
    arch = HVAEArch(widths=[4, 8], blocks=[1, 1], latent_channels=2, stochastic_max_res=8)
    model = HVAE(16, arch, parent_specs(store, ["domain"], store.indices("train")))
    save_generator(root / "hvae", model, {"domains": store.domains})
    assert evaluate(root, root / "hvae", root / "judge", root / "model", "--set", "null_steps=2") == 0
    result = json.loads((root / "model" / "cf_quality.json").read_text())
    assert result["generator"]["kind"] == "model" and len(result["pairs"]) == 6
    assert set(result["composition"]) == {"mae_1", "mae_2", "per_source"}
    assert all(0 <= result["composition"][k] <= 1 for k in ("mae_1", "mae_2"))
    assert 0 <= result["reversibility"]["mae"] <= 1 and result["truth"]["mae_identity"] > 0.05
    # every pair's errors are this model's counterfactuals of the selected test images, computed here image by image
    pairs = pd.read_csv(root / "model" / "pairs.csv").set_index(["source", "target"])
    truth = ImageStore.open(root / "store" / "true_cf")
    table = truth.counterfactual_table(len(store), len(store.domains))
    domains = store.meta["domain"].to_numpy()
    errors = {}
    for row in select_images(store, ["test"], [0, 1, 2], 8, seed=0):
        x = torch.from_numpy(store.images[[row]]).float()[:, None] / 255
        pa = parents_from_store(store, np.array([row]), model.specs)
        for target in {0, 1, 2} - {domains[row]}:
            pa_star = intervene(pa, domain=torch.tensor([target]))
            x_star = counterfactual(model, x, pa, pa_star)
            x_true = torch.from_numpy(truth.images[[table[row, target]]]).float()[:, None] / 255
            back = counterfactual(model, x_star, pa_star, pa)
            errors.setdefault((domains[row], target), []).append(
                (
                    (x_star - x_true).abs().mean().item(),
                    (back - x).abs().mean().item(),
                    (x - x_true).abs().mean().item(),
                )
            )
    assert set(errors) == set(pairs.index)
    for pair, values in errors.items():
        mae_cf, reversibility, mae_identity = np.mean(values, axis=0)
        assert pairs.loc[pair, "n"] == len(values)
        assert pairs.loc[pair, "mae_cf"] == pytest.approx(mae_cf, abs=1e-5)
        assert pairs.loc[pair, "reversibility"] == pytest.approx(reversibility, abs=1e-5)
        assert pairs.loc[pair, "mae_identity"] == pytest.approx(mae_identity, abs=1e-5)

    rare_unseen = HVAE(16, arch, parent_specs(store, ["domain"], store.indices("train", [0, 1])))
    save_generator(root / "hvae2", rare_unseen, {"domains": store.domains})
    assert evaluate(root, root / "hvae2", root / "judge", root / "model2") == 2
    assert "never saw domain(s) rare" in capsys.readouterr().err

    with_age = HVAE(16, arch, [*parent_specs(store, ["domain"]), ParentSpec("age", "continuous", mean=50.0, std=10.0)])
    save_generator(root / "hvae3", with_age, {"domains": store.domains})
    assert evaluate(root, root / "hvae3", root / "judge", root / "model3") == 2
    assert "parent 'age' is not a column of metadata.csv" in capsys.readouterr().err
