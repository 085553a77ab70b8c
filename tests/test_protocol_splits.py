"""Split discipline of the protocol: which rows each step may see.

Probes learn only from (a subset of) their training split, ``transfer`` applies the ID probe
unchanged to the OOD scanner, pretraining batches hold only training images and counterfactuals
never target the OOD scanner, and every evaluated seed has its own encoder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.data import ViewBatches, open_pretrain_data
from cfcl.contrastive.methods import METHODS, default_cf_store
from cfcl.counterfactual import generate_store
from cfcl.counterfactual.config import CFGenerateConfig
from cfcl.counterfactual.generator.checkpoint import save_generator
from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
from cfcl.counterfactual.parents import parent_specs
from cfcl.data.store import ImageStore, write_store
from cfcl.errors import ConfigError
from cfcl.evaluation import evaluate as evaluate_module
from cfcl.evaluation.config import EvaluateConfig
from cfcl.evaluation.evaluate import Evaluation, run
from cfcl.loaders import step_loader
from support.cf_stores import make_store
from support.evaluation import tiny_encoder, tiny_store

CF_METHODS = [name for name, m in METHODS.items() if m.uses_counterfactuals]
SEX_METHODS = [name for name, m in METHODS.items() if m.parents == ("sex",)]

FRACTIONS = [0.1, 0.25, 0.5, 1.0]
SEEDS = [0, 1, 2]


def coded_features(store: ImageStore, seed: int = 0) -> np.ndarray:
    """Column 0 is the row number (to read back which rows a probe saw); column 1 carries the label,
    with the opposite sign on the OOD scanner, so only a probe fitted on OOD labels can rank OOD images."""
    meta = store.meta
    sign = np.where(meta["split"].str.startswith("ood"), -1.0, 1.0)
    noise = np.random.default_rng(seed).normal(size=(len(meta), 3))
    signal = sign * (meta["label"].to_numpy() - 0.5) * 2 + 0.5 * noise[:, 0]
    return np.column_stack([np.arange(len(meta)), signal, noise[:, 1:]])


@pytest.fixture
def recorded_evaluation(tmp_path, monkeypatch):
    """An evaluation over coded features whose probe fits (rows seen) and predictions (probe, rows) are recorded."""
    store = tiny_store(tmp_path / "data")
    config = EvaluateConfig(data=tmp_path / "data", seeds=SEEDS, label_fractions=FRACTIONS)
    ev = Evaluation(config, store, tmp_path / "eval")
    fits, applied = [], []
    real_fit, real_apply = evaluate_module.fit_probe, evaluate_module.class_probabilities

    def fit(features, labels, *args):
        probe = real_fit(features, labels, *args)
        fits.append((probe, features[:, 0].astype(int)))
        return probe

    def apply(probe, features, n_classes):
        applied.append((probe, features[:, 0].astype(int)))
        return real_apply(probe, features, n_classes)

    monkeypatch.setattr(evaluate_module, "fit_probe", fit)
    monkeypatch.setattr(evaluate_module, "class_probabilities", apply)
    return ev, store, fits, applied


def test_probe_rows_are_a_domain_stratified_subset_of_the_training_split(recorded_evaluation):
    ev, store, fits, _ = recorded_evaluation
    meta = store.meta
    features = coded_features(store)
    for split in ("train", "ood_train"):
        groups = meta[meta["split"] == split].groupby(["domain", "label"]).size()
        for fraction in FRACTIONS:
            for seed in SEEDS:
                fits.clear()
                ev.linear("a", seed, features, fraction)
                ev.linear("b", seed, features, fraction)
                seen = [rows for _, rows in fits if set(meta["split"].to_numpy()[rows]) == {split}]
                fitted_on = [set(meta["split"][rows]) for _, rows in fits]
                assert len(seen) == 2, f"{split} fraction {fraction} seed {seed}: probes fitted on {fitted_on}"
                assert np.array_equal(seen[0], seen[1])  # every method gets the same labels
                rows = seen[0]
                assert len(np.unique(rows)) == len(rows)
                taken = meta.iloc[rows].groupby(["domain", "label"]).size().reindex(groups.index, fill_value=0)
                assert (taken == (groups * fraction).round().astype(int)).all(), (split, fraction, seed)
    subsets = {}
    for seed in SEEDS:
        fits.clear()
        ev.linear("a", seed, features, 0.5)
        subsets[seed] = tuple(fits[0][1])
    assert len(set(subsets.values())) == len(SEEDS)  # each seed draws its own labels


def test_transfer_applies_the_id_probe_unchanged_to_the_ood_scanner(recorded_evaluation):
    ev, store, fits, applied = recorded_evaluation
    split = store.meta["split"].to_numpy()
    features = coded_features(store)
    ev.linear("a", 0, features, 1.0)
    id_probe = next(probe for probe, rows in fits if set(split[rows]) == {"train"})
    ood_probe = next(probe for probe, rows in fits if set(split[rows]) == {"ood_train"})
    on_ood_test = [probe for probe, rows in applied if set(split[rows]) == {"ood_test"}]
    assert len(on_ood_test) == 2 and on_ood_test[0] is id_probe and on_ood_test[1] is ood_probe
    by_protocol = {(p.protocol, p.test_set): p for p in ev.predictions}
    assert set(by_protocol) == {("linear", "id"), ("transfer", "ood"), ("linear", "ood")}
    # the label's sign flips on the OOD scanner: the ID probe ranks it backwards, a probe on OOD labels ranks it right
    transfer, ood_probe_pred = by_protocol["transfer", "ood"], by_protocol["linear", "ood"]
    assert roc_auc_score(transfer.y, transfer.prob[:, 1]) < 0.2
    assert roc_auc_score(ood_probe_pred.y, ood_probe_pred.prob[:, 1]) > 0.8
    assert roc_auc_score(by_protocol["linear", "id"].y, by_protocol["linear", "id"].prob[:, 1]) > 0.8
    ood_test = store.indices("ood_test")
    assert np.array_equal(transfer.y, store.meta["label"].to_numpy()[ood_test])
    assert np.allclose(transfer.prob, id_probe.predict_proba(features[ood_test]))


# ---- pretraining ----------------------------------------------------------------------------

PRETRAIN_SPLITS = {"train": 24, "val": 6, "test": 6, "ood_train": 6, "ood_test": 6}
OOD = 3


@pytest.fixture(scope="module")
def coded_stores(tmp_path_factory):
    """Image i has pixel (0, 0) = i and pixel (0, 1) = 0; its counterfactual for domain d has (i, 1 + d).

    The counterfactual store holds every image of every split for every domain, the OOD one included,
    so only the pairing keeps pretraining away from what it must not see.
    """
    root = tmp_path_factory.mktemp("coded")
    splits = [s for s, n in PRETRAIN_SPLITS.items() for _ in range(n)]
    n = len(splits)
    domains = [OOD if s.startswith("ood") else i % 3 for i, s in enumerate(splits)]
    meta = pd.DataFrame(
        {
            "index": range(n),
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": splits,
            "domain": domains,
            "label": [i % 2 for i in range(n)],
            "sex": [("F", "M")[(i // 3) % 2] for i in range(n)],
        }
    )
    images = np.zeros((n, 8, 8), np.uint8)
    images[:, 0, 0] = np.arange(n)
    names = ["a", "b", "c", "held_out"]
    data = write_store(root / "data", images, meta, names, ["n", "y"], extra={"ood_domains": [OOD], "synthetic": True})
    source, target = np.repeat(np.arange(n), 4), np.tile(np.arange(4), n)
    cf_images = np.zeros((len(source), 8, 8), np.uint8)
    cf_images[:, 0, 0], cf_images[:, 0, 1] = source, 1 + target
    cf_meta = pd.DataFrame(
        {
            "index": range(len(source)),
            "source_index": source,
            "target_domain": target,
            "split": meta["split"].to_numpy()[source],
            "domain": target,
        }
    )
    write_store(
        root / "data" / "true_cf",
        cf_images,
        cf_meta,
        names,
        ["n", "y"],
        kind="counterfactuals",
        extra={"source_store": data.content_hash},
    )
    source, target = np.repeat(np.arange(n), 2), np.tile(np.arange(2), n)
    cf_images = np.zeros((len(source), 8, 8), np.uint8)
    cf_images[:, 0, 0], cf_images[:, 0, 1] = source, 1 + target
    cf_meta = pd.DataFrame(
        {
            "index": range(len(source)),
            "source_index": source,
            "target_sex": target,
            "split": meta["split"].to_numpy()[source],
            "domain": meta["domain"].to_numpy()[source],
        }
    )
    write_store(
        root / "data" / "true_cf_sex",
        cf_images,
        cf_meta,
        names,
        ["n", "y"],
        kind="counterfactuals",
        extra={"source_store": data.content_hash, "intervened": {"sex": ["F", "M"]}},
    )
    return root / "data", meta


@pytest.mark.parametrize("method", METHODS)
def test_pretraining_batches_hold_only_training_images_and_id_counterfactuals(coded_stores, method):
    data_path, meta = coded_stores
    sex = method in SEX_METHODS
    cf_store = None if method == "simclr" else data_path / ("true_cf_sex" if sex else "true_cf")
    config = PretrainConfig(method=method, data=data_path, cf_store=cf_store, batch_size=6)
    data = open_pretrain_data(
        config.method, config.data, config.cf_store or default_cf_store(method, data_path), config.split
    )
    batches = ViewBatches(
        data, method, config.batch_size, config.seed, config.p_replace, config.p_cf, pretrain.cf_views(config, data)
    )
    per_epoch = batches.batches_per_epoch(1)
    sources, cf_targets = [], []
    for epoch in range(3):
        for batch in step_loader(
            batches, lambda epoch=epoch: (epoch * per_epoch, 0, 1), num_workers=0, pin_memory=False
        ):
            pixels = batch["views"][:, 0, 0, :2].numpy().astype(int)
            groups = batch["groups"].numpy()
            assert all(len(set(pixels[groups == g, 0])) == 1 for g in np.unique(groups))  # views of one image
            sources.append(pixels[:, 0])
            cf_targets.append(pixels[:, 1] - 1)
    sources, cf_targets = np.concatenate(sources), np.concatenate(cf_targets)
    assert set(meta["split"].to_numpy()[sources]) == {"train"}
    assert set(sources) == set(np.flatnonzero(meta["split"] == "train"))
    from_cf = cf_targets >= 0
    own = (meta["sex"] == "M").to_numpy().astype(int) if sex else meta["domain"].to_numpy()
    assert sex or OOD not in set(cf_targets[from_cf])
    assert not (cf_targets[from_cf] == own[sources[from_cf]]).any()
    assert from_cf.any() == (method in CF_METHODS)


def test_the_generated_counterfactual_store_never_targets_the_ood_scanner(tmp_path):
    """Even a generator that saw the OOD scanner makes counterfactuals of training images to other ID scanners only."""
    store = make_store(tmp_path / "data", n_per_domain=(8, 8, 8), n_ood=4, true_cf=False)
    torch.manual_seed(0)
    arch = HVAEArch(widths=[4, 8], blocks=[1, 1], latent_channels=2, stochastic_max_res=8)
    specs = parent_specs(store, ["domain"])
    assert OOD in specs[0].seen
    save_generator(tmp_path / "gen", HVAE(16, arch, specs), {"domains": store.domains})
    generate_store.run(
        CFGenerateConfig(data=store.path, generator=tmp_path / "gen", progress_bar=False, device="cpu"), tmp_path / "cf"
    )
    cf = ImageStore.open(tmp_path / "cf")
    source = cf.meta["source_index"].to_numpy()
    target = cf.meta["target_domain"].to_numpy()
    train = store.indices("train")
    assert set(target) == {0, 1, 2} and not (target == store.meta["domain"].to_numpy()[source]).any()
    assert set(source) == set(train) and len(cf) == 2 * len(train)
    assert cf.info["target_domains"] == [0, 1, 2]


# ---- seeds ----------------------------------------------------------------------------------


def test_an_evaluated_seed_without_its_encoder_is_an_error(tmp_path, capsys):
    tiny_store(tmp_path / "data")
    encoders = [
        tiny_encoder(tmp_path / "simclr-s0", "simclr", 0),
        tiny_encoder(tmp_path / "simclr-s1", "simclr", 1),
        tiny_encoder(tmp_path / "cf-simclr-s0", "cf-simclr", 0),
    ]
    config = EvaluateConfig(data=tmp_path / "data", encoders=encoders, seeds=[0, 1], label_fractions=[1.0])
    with pytest.raises(ConfigError) as err:
        run(config, tmp_path / "eval")
    message = str(err.value)
    assert "no cf-simclr encoder pretrained with seed 1" in message and str(tmp_path / "cf-simclr-s0") in message
    assert "\n" not in message
    assert not (tmp_path / "eval").exists()
