"""Counterfactuals of any discrete parent: cf generate with intervene [sex] and [domain, sex], the
store's cells, pairing over them, and the bad input refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cfcl.cli import main
from cfcl.contrastive.data import open_pretrain_data
from cfcl.contrastive.pairing import plan_views
from cfcl.counterfactual.generate_store import intervened_specs
from cfcl.counterfactual.generator.checkpoint import load_generator
from cfcl.counterfactual.generator.inference import counterfactual
from cfcl.counterfactual.parents import ParentError, ParentSpec, intervene, parents_from_store
from cfcl.data.store import ImageStore
from cfcl.errors import StoreError
from support.cf_stores import make_store

TINY = [
    "arch.widths=[8, 8, 16]",
    "arch.blocks=[1, 1, 1]",
    "arch.latent_channels=4",
    "arch.stochastic_max_res=8",
    "batch_size=16",
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "val_images=8",
    "grid_images=4",
    "parents=[domain, sex]",
]
SEXES = np.array(["F", "M"])


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sexcf")
    store = make_store(root / "store", true_cf=False, sexes=("F", "M"))
    assert main(["cf", "train", "--data", str(store.path), "--out", str(root / "gen"), *sets(TINY)]) == 0
    return root, store


def generate(trained, out: Path, *changes: str) -> int:
    root, store = trained
    return main(
        [
            "cf",
            "generate",
            "--generator",
            str(root / "gen"),
            "--data",
            str(store.path),
            "--out",
            str(out),
            *sets(["progress_bar=false", "chunk=16", *changes]),
        ]
    )


def test_sex_store_holds_each_image_under_the_other_sex_only(trained, tmp_path):
    root, store = trained
    assert generate(trained, tmp_path / "sex", "intervene=[sex]") == 0
    cf = ImageStore.open(tmp_path / "sex")
    train = store.indices("train")
    source = cf.meta["source_index"].to_numpy()
    assert cf.intervened == {"sex": ["F", "M"]} and len(cf) == len(train) and set(source) == set(train)
    assert (SEXES[cf.meta["target_sex"]] != store.meta["sex"].to_numpy()[source]).all()
    assert (
        "target_domain" not in cf.meta
        and (cf.meta["domain"].to_numpy() == store.meta["domain"].to_numpy()[source]).all()
    )
    table = cf.counterfactual_table(len(store), len(store.domains))
    own = cf.source_cells(store)
    assert (
        table.shape == (len(store), 2)
        and (table[train, own[train]] == -1).all()
        and (table[train, 1 - own[train]] >= 0).all()
    )
    model, _ = load_generator(root / "gen")
    rows = cf.meta.iloc[::5]
    x = torch.from_numpy(store.images[rows["source_index"].to_numpy()]).float()[:, None] / 255
    pa = parents_from_store(store, rows["source_index"].to_numpy(), model.specs)
    with torch.no_grad():
        expected = counterfactual(model, x, pa, intervene(pa, sex=torch.as_tensor(rows["target_sex"].to_numpy())))
    written = torch.from_numpy(cf.images[rows["index"].to_numpy()]).float()
    assert (written - (expected[:, 0] * 255).round()).abs().max() <= 1


def test_joint_store_holds_every_other_combination_of_id_scanner_and_sex(trained, tmp_path):
    _, store = trained
    assert generate(trained, tmp_path / "joint", "intervene=[domain, sex]") == 0
    cf = ImageStore.open(tmp_path / "joint")
    train = store.indices("train")
    assert list(cf.intervened) == ["domain", "sex"] and len(cf) == (3 * 2 - 1) * len(train)
    source = cf.meta["source_index"].to_numpy()
    combos = set(zip(source, cf.meta["target_domain"], cf.meta["target_sex"]))
    assert len(combos) == len(cf) and 3 not in set(cf.meta["target_domain"])  # the OOD scanner is never a target
    own_domain, own_sex = store.meta["domain"].to_numpy()[source], store.meta["sex"].to_numpy()[source]
    assert ((cf.meta["target_domain"].to_numpy() != own_domain) | (SEXES[cf.meta["target_sex"]] != own_sex)).all()
    assert (cf.meta["domain"] == cf.meta["target_domain"]).all()
    table = cf.counterfactual_table(len(store), len(store.domains))
    assert table.shape == (len(store), 4 * 2) and (table[train] >= 0).sum() == len(cf)


def test_pairing_draws_the_other_sex_and_refuses_a_store_of_another_parent(trained, tmp_path):
    _, store = trained
    assert generate(trained, tmp_path / "sex", "intervene=[sex]") == 0
    data = open_pretrain_data("sex-cf-simclr", store.path, tmp_path / "sex")
    assert data.targets == [0, 1]
    sources = data.sources[:12]
    plan = plan_views(
        "sex-cf-simclr", sources, data.cells[sources], data.cf_table, data.targets, np.random.default_rng(0)
    )
    second = plan.rows[len(sources) :]
    assert plan.from_cf[len(sources) :].all() and (data.cf.meta["source_index"].to_numpy()[second] == sources).all()
    assert (SEXES[data.cf.meta["target_sex"].to_numpy()[second]] != store.meta["sex"].to_numpy()[sources]).all()
    with pytest.raises(StoreError, match="cf_store of method 'cf-simclr': .* intervenes on sex, not on domain"):
        open_pretrain_data("cf-simclr", store.path, tmp_path / "sex")


def test_pairing_over_joint_cells_never_draws_the_own_combination():
    # 4 images, cells = domain * 2 + sex over 2 domains x 2 sexes; image i has own cell own[i]
    own = np.array([0, 1, 2, 3])
    table = np.arange(16).reshape(4, 4) + 100
    rng = np.random.default_rng(0)
    for _ in range(20):
        plan = plan_views("cf-simclr-multi", np.arange(4), own, table, [0, 1, 2, 3], rng, n_cf_views=3)
        views = plan.rows.reshape(4, 4)[1:] - 100
        for i in range(4):
            assert sorted(views[:, i] - 4 * i) == sorted({0, 1, 2, 3} - {own[i]})


def test_intervening_on_a_parent_the_generator_lacks_is_refused_before_writing(trained, tmp_path, capsys):
    root, _ = trained
    assert generate(trained, tmp_path / "x", "intervene=[age]") == 2
    err = capsys.readouterr().err
    assert (
        f"cannot intervene on parent 'age': generator {root / 'gen' / 'generator.pt'} "
        "was conditioned on domain, sex only" in err
    )
    assert err.count("\n") == 1 and not (tmp_path / "x").exists()


def test_a_parent_with_one_value_or_continuous_is_refused():
    sex = ParentSpec("sex", "discrete", 2, (0,), ("F", "M"), categories=("F", "M"))
    with pytest.raises(
        ParentError, match=r"parent 'sex' of generator g.pt: it has one value \(F\) in the training split"
    ):
        intervened_specs([sex], ["sex"], Path("g.pt"))
    unknown = ParentSpec("sex", "discrete", 3, (0, 1), ("", "F", "M"), categories=("", "F", "M"))
    with pytest.raises(
        ParentError, match=r"one value \(F\) in the training split"
    ):  # an empty (unknown) sex is no target
        intervened_specs([unknown], ["sex"], Path("g.pt"))
    with pytest.raises(ParentError, match="parent 'age' of generator g.pt: it is continuous"):
        intervened_specs([ParentSpec("age", "continuous")], ["age"], Path("g.pt"))
