"""The evaluate stage end to end on a tiny store: metrics.csv layout, protocols, baselines, caching, bad input."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cfcl.cli import main
from cfcl.contrastive.encoders import build_encoder, load_encoder
from cfcl.data.store import ImageStore, write_store
from cfcl.errors import CheckpointError, ConfigError
from cfcl.evaluation import evaluate as evaluate_module
from cfcl.evaluation.config import EvaluateConfig
from cfcl.evaluation.embeddings import domain_predictability, domain_silhouette, equal_per_domain, knn_domain_purity
from cfcl.evaluation.evaluate import run
from cfcl.evaluation.features import extract_features
from cfcl.evaluation.metrics import MetricError, paired_seed_gain
from cfcl.evaluation.probe import class_probabilities, fit_probe
from cfcl.evaluation.results import COLUMNS, SEED_GAIN_COLUMNS, SUBGROUP_GAP_COLUMNS
from cfcl.report.report import run_report
from support.evaluation import DOMAINS, complete_stage, probe_auroc, tiny_encoder, tiny_store
from support.findings import FINDING_NAMES, findings_store

SMALL_EMBEDDINGS = {"per_domain": 30, "tsne_points": 60, "folds": 3}
# (protocol, test set, the split its probe trains on, the split it is tested on)
PROTOCOL_SPLITS = (
    ("linear", "id", "train", "test"),
    ("transfer", "ood", "train", "ood_test"),
    ("linear", "ood", "ood_train", "ood_test"),
)


def config(store, encoders, **changes):
    base = dict(
        data=store,
        encoders=encoders,
        seeds=[0, 1],
        label_fractions=[0.5, 1.0],
        n_boot=50,
        embeddings=SMALL_EMBEDDINGS,
        finetune={"supervised": False},
    )
    return EvaluateConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One evaluation with every protocol: two pretrained methods (seeds 0, 1), both baselines, fine-tuning for one
    epoch."""
    root = tmp_path_factory.mktemp("run")
    tiny_store(root / "data", sex=True)
    encoders = [tiny_encoder(root / "pretrain" / f"{m}-s{s}", m, s) for m in ("simclr", "cf_simclr") for s in (0, 1)]
    cfg = config(
        root / "data",
        encoders,
        finetune={
            "enabled": True,
            "supervised": True,
            "ood": True,
            "batch_size": 32,
            "trainer": {"max_epochs": 1, "progress_bar": False, "log_every_n_steps": 1},
        },
    )
    run(cfg, root / "eval")
    return root


def test_metrics_csv_is_long_format_with_every_protocol_and_test_set(evaluated):
    metrics = pd.read_csv(evaluated / "eval" / "metrics.csv")
    assert list(metrics.columns) == COLUMNS
    combos = set(metrics[["method", "protocol", "test_set"]].itertuples(index=False, name=None))
    for method in ("simclr", "cf_simclr", "random"):
        assert {(method, "linear", "id"), (method, "linear", "ood"), (method, "transfer", "ood")} <= combos
    for method in ("simclr", "cf_simclr", "supervised"):
        assert {(method, "finetune", "id"), (method, "finetune", "ood")} <= combos
    assert not {("random", "finetune", "id"), ("supervised", "linear", "id")} & combos
    assert set(metrics["seed"]) == {0, 1} and set(metrics["label_fraction"]) == {0.5, 1.0}
    assert set(metrics.loc[metrics["test_set"] == "id", "domain"]) == {"all", *DOMAINS[:3]}
    assert set(metrics.loc[metrics["test_set"] == "ood", "domain"]) == {"all"}
    assert set(metrics["metric"]) == {
        "auroc",
        "balanced_accuracy",
        "auroc_ci_low",
        "auroc_ci_high",
        "balanced_accuracy_ci_low",
        "balanced_accuracy_ci_high",
        "balanced_accuracy_val_threshold",
    }
    # the threshold chosen on ID validation images scores the ID probe only (linear ID, transfer), not the OOD probe
    # or fine-tuning; no headroom without true counterfactuals
    thresholded = metrics[metrics["metric"] == "balanced_accuracy_val_threshold"]
    assert set(zip(thresholded["protocol"], thresholded["test_set"])) == {("linear", "id"), ("transfer", "ood")}
    assert "ceiling" not in set(metrics["protocol"])
    assert pd.read_csv(evaluated / "eval" / "domain_predictability.csv")["cf_invariance"].isna().all()
    assert set(metrics["subgroup"]) == {"all", "sex=F", "sex=M"}
    wide = metrics.pivot_table(index=COLUMNS[:7], columns="metric", values="value")
    assert (wide["auroc_ci_low"] <= wide["auroc"]).all() and (wide["auroc"] <= wide["auroc_ci_high"]).all()
    assert wide["auroc"].between(0, 1).all()
    # each protocol's probe learnt from its own training split only, and transfer applied the ID probe to OOD images
    store = ImageStore.open(evaluated / "data")
    encoder = evaluated / "pretrain" / "cf_simclr-s1"
    for protocol, test_set, train_split, test_split in PROTOCOL_SPLITS:
        reported = wide.loc[("cf_simclr", 1, protocol, 1.0, test_set, "all", "all"), "auroc"]
        assert reported == pytest.approx(probe_auroc(store, encoder, train_split, test_split), abs=1e-9), protocol


def test_pretrained_features_beat_nothing_and_the_label_is_learnt(evaluated):
    metrics = pd.read_csv(evaluated / "eval" / "metrics.csv")
    linear = metrics.query("protocol == 'linear' and metric == 'auroc' and domain == 'all' and subgroup == 'all'")
    # the tiny store's label is a bright square: any conv features separate it well above chance
    assert linear.groupby("method")["value"].mean().min() > 0.7
    # ... and no better than a probe that never saw a validation, test or OOD label: the score is not leaked
    store = ImageStore.open(evaluated / "data")
    id_linear = linear[(linear["test_set"] == "id") & (linear["label_fraction"] == 1.0)].set_index(["method", "seed"])[
        "value"
    ]
    for method in ("simclr", "cf_simclr"):
        for seed in (0, 1):
            expected = probe_auroc(store, evaluated / "pretrain" / f"{method}-s{seed}", "train", "test")
            assert id_linear[method, seed] == pytest.approx(expected, abs=1e-9)


def test_gains_and_embedding_outputs(evaluated):
    gains = pd.read_csv(evaluated / "eval" / "gains.csv")
    assert set(gains["reference"]) == {"simclr"} and "simclr" not in set(gains["method"])
    assert (gains["ci_low"] <= gains["gain"]).all() and (gains["gain"] <= gains["ci_high"]).all()
    assert set(gains["n_seeds"]) == {2}
    # each gain is the seed-paired mean AUROC difference of metrics.csv, for every protocol, fraction and domain
    metrics = pd.read_csv(evaluated / "eval" / "metrics.csv").query("metric == 'auroc' and subgroup == 'all'")
    auroc = metrics.set_index(["method", "protocol", "label_fraction", "test_set", "domain", "seed"])["value"]
    assert set(gains["method"]) == {"cf_simclr", "random", "supervised"} and len(gains) > 20
    for row in gains.itertuples():
        key = (row.protocol, row.label_fraction, row.test_set, row.domain)
        expected = np.mean([auroc[(row.method, *key, s)] - auroc[("simclr", *key, s)] for s in (0, 1)])
        assert row.gain == pytest.approx(expected, abs=1e-9), key
    predictability = pd.read_csv(evaluated / "eval" / "domain_predictability.csv")
    # every method's encoder of every seed, the random encoder beside the pretrained ones
    assert sorted(zip(predictability["method"], predictability["seed"])) == sorted(
        (m, s) for m in ("simclr", "cf_simclr", "random") for s in (0, 1)
    )
    assert np.allclose(predictability["chance"], 1 / 4) and set(predictability["knn_k"]) == {10}
    # the tiny store's domains differ in brightness: any encoder's features tell them apart, and cluster by it
    assert (predictability["balanced_accuracy"] > 0.5).all()
    assert (predictability["knn_purity"] > 0.2).all() and (predictability["knn_purity"] <= 1).all()
    assert predictability["silhouette"].between(-1, 1).all()
    for method in ("simclr", "cf_simclr", "random"):
        tsne = pd.read_csv(evaluated / "eval" / "tsne" / f"{method}.csv")
        assert list(tsne.columns) == ["x", "y", "domain", "label"] and len(tsne) == 60
        assert (evaluated / "eval" / f"tsne_{method}.png").read_bytes()[:4] == b"\x89PNG"


def test_seed_gains_are_t_intervals_over_seeds_of_every_metric_and_invariance_measure(evaluated):
    seed_gains = pd.read_csv(evaluated / "eval" / "seed_gains.csv")
    assert list(seed_gains.columns) == SEED_GAIN_COLUMNS
    assert set(seed_gains["reference"]) == {"simclr"} and set(seed_gains["method"]) == {
        "cf_simclr",
        "random",
        "supervised",
    }
    assert (seed_gains["n_seeds"] == 2).all()
    metrics = pd.read_csv(evaluated / "eval" / "metrics.csv")
    probes = seed_gains[seed_gains["protocol"] != "embedding"]
    assert set(probes["metric"]) == {"auroc", "balanced_accuracy", "balanced_accuracy_val_threshold"}
    for row in probes.sample(10, random_state=0).itertuples():
        pick = metrics.query(
            "protocol == @row.protocol and label_fraction == @row.label_fraction and "
            "test_set == @row.test_set and domain == @row.domain and metric == @row.metric and "
            "subgroup == 'all'"
        )
        diffs = (
            pick[pick["method"] == row.method].set_index("seed")["value"]
            - pick[pick["method"] == "simclr"].set_index("seed")["value"]
        )
        half = 12.7062 * diffs.std(ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
        assert row.gain == pytest.approx(diffs.mean()) and row.ci_high == pytest.approx(diffs.mean() + half, abs=1e-4)
        assert row.n_positive == (diffs > 0).sum() and row.supported == (row.ci_low > 0 or row.ci_high < 0)
    # the invariance measures: CF-SimCLR (and the random encoder) against SimCLR, paired by seed
    embedding = seed_gains[seed_gains["protocol"] == "embedding"].set_index(["method", "metric"])
    assert set(embedding.index) == {
        (m, k) for m in ("cf_simclr", "random") for k in ("domain_predictability", "knn_purity", "silhouette")
    }
    assert set(embedding["test_set"]) == {"test+ood_test"}
    table = pd.read_csv(evaluated / "eval" / "domain_predictability.csv")
    expected = paired_seed_gain(
        *(table[table["method"] == m].set_index("seed")["knn_purity"] for m in ("cf_simclr", "simclr"))
    )
    assert embedding.loc[("cf_simclr", "knn_purity"), "gain"] == pytest.approx(expected.mean)
    assert embedding.loc[("cf_simclr", "knn_purity"), "ci_low"] == pytest.approx(expected.ci_low)
    # this store lists no covariates: the covariates baseline is skipped, and says so
    assert "covariates" not in set(metrics["method"])
    assert "covariates baseline skipped: " in (evaluated / "eval" / "notes.txt").read_text()


def test_subgroup_rows_are_the_auroc_of_each_sex_and_sex_by_scanner_where_counts_allow(evaluated):
    metrics = pd.read_csv(evaluated / "eval" / "metrics.csv")
    store = ImageStore.open(evaluated / "data")
    auroc = metrics.query("metric == 'auroc'").set_index(COLUMNS[:7])["value"]
    encoder = evaluated / "pretrain" / "simclr-s0"
    # the probe of every protocol, on one sex's test images only (scikit-learn's AUROC on that subset)
    for protocol, test_set, train_split, test_split in (
        ("linear", "id", "train", "test"),
        ("transfer", "ood", "train", "ood_test"),
        ("linear", "ood", "ood_train", "ood_test"),
    ):
        for sex in ("F", "M"):
            expected = probe_auroc(store, encoder, train_split, test_split, sex=sex)
            assert auroc[("simclr", 0, protocol, 1.0, test_set, "all", f"sex={sex}")] == pytest.approx(
                expected, abs=1e-9
            )
    # sex x scanner: the major scanner has 15 test images of each class per sex; middle and rare 7-8, under the
    # default 10
    expected = probe_auroc(store, encoder, "train", "test", sex="M", domain=0)
    assert auroc[("simclr", 0, "linear", 1.0, "id", "major", "sex=M")] == pytest.approx(expected, abs=1e-9)
    subgroups = metrics[metrics["subgroup"] != "all"]
    assert set(subgroups["domain"]) == {"all", "major"} and set(subgroups["method"]) == {
        "simclr",
        "cf_simclr",
        "random",
        "supervised",
    }
    assert set(subgroups["protocol"]) == {"linear", "transfer", "finetune"}
    notes = (evaluated / "eval" / "notes.txt").read_text()
    assert (
        "subgroup sex=F of test set id/middle skipped: [8, 8] images of classes [0, 1], "
        "fewer than subgroups.min_per_class=10" in notes
    )
    assert "subgroup sex=M of test set id/rare skipped" in notes


def test_subgroup_gaps_are_male_minus_female_paired_by_seed(evaluated):
    metrics = pd.read_csv(evaluated / "eval" / "metrics.csv")
    gaps = pd.read_csv(evaluated / "eval" / "subgroup_gaps.csv")
    assert list(gaps.columns) == SUBGROUP_GAP_COLUMNS
    assert set(gaps["subgroup"]) == {"sex=M"} and set(gaps["reference"]) == {"sex=F"} and (gaps["n_seeds"] == 2).all()
    assert set(gaps["metric"]) == {"auroc", "balanced_accuracy", "balanced_accuracy_val_threshold"}
    assert set(gaps["domain"]) == {"all", "major"}
    assert set(gaps["method"]) == {"simclr", "cf_simclr", "random", "supervised"}
    for row in gaps.sample(10, random_state=0).itertuples():
        pick = metrics.query(
            "method == @row.method and protocol == @row.protocol and label_fraction == @row.label_fraction "
            "and test_set == @row.test_set and domain == @row.domain and metric == @row.metric"
        )
        diffs = (
            pick[pick["subgroup"] == "sex=M"].set_index("seed")["value"]
            - pick[pick["subgroup"] == "sex=F"].set_index("seed")["value"]
        )
        half = 12.7062 * diffs.std(ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
        assert row.gap == pytest.approx(diffs.mean()) and row.ci_low == pytest.approx(diffs.mean() - half, abs=1e-4)
        assert row.n_positive == (diffs > 0).sum() and row.supported == (row.ci_low > 0 or row.ci_high < 0)


def test_report_of_an_evaluated_run_shows_the_sex_gap_table_and_figure(evaluated, tmp_path):
    run_report(evaluated, tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    section = summary.split("## Subgroup gaps")[1].split("\n## ")[0]
    assert "AUROC gap sex=M minus sex=F at 50% labels, paired by seed" in section
    assert "| simclr (linear) |" in section and "| supervised (finetune) |" in section and "ID major" in section
    assert "(figures/subgroup_gap_sex_M.png)" in section
    assert (tmp_path / "report" / "figures" / "subgroup_gap_sex_M.png").read_bytes()[:4] == b"\x89PNG"


def test_features_are_cached_and_reused(evaluated, monkeypatch, tmp_path):
    cached = sorted((evaluated / "eval" / "features").glob("*.npy"))
    assert len(cached) == 4 + 2  # two pretrained encoders per seed, one random encoder per seed

    def refuse(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(evaluate_module, "extract_features", refuse)
    encoders = sorted((evaluated / "pretrain").iterdir())
    run(config(evaluated / "data", encoders, embeddings={"enabled": False}), evaluated / "eval", force=True)
    assert sorted((evaluated / "eval" / "features").glob("*.npy")) == cached


def test_same_config_gives_identical_metrics(evaluated, tmp_path):
    encoders = [evaluated / "pretrain" / "simclr-s0", evaluated / "pretrain" / "simclr-s1"]
    cfg = config(evaluated / "data", encoders, embeddings={"enabled": False}, random_baseline=False)
    run(cfg, tmp_path / "a")
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(evaluated / "data"),
                "--encoder",
                str(encoders[0]),
                "--encoder",
                str(encoders[1]),
                "--out",
                str(tmp_path / "b"),
                "--set",
                "seeds=[0,1]",
                "--set",
                "label_fractions=[0.5,1.0]",
                "--set",
                "n_boot=50",
                "--set",
                "embeddings.enabled=false",
                "--set",
                "random_baseline=false",
                "--set",
                "finetune.supervised=false",
            ]
        )
        == 0
    )
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_feature_extraction_keeps_batchnorm_in_eval_mode():
    torch.manual_seed(0)
    encoder = build_encoder("small", width=4, blocks=[1, 1]).train()
    stats = encoder.backbone.stem[1].running_mean.clone()
    images = np.random.default_rng(0).integers(0, 255, (10, 16, 16), dtype=np.uint8)
    whole = extract_features(encoder, images, batch_size=10)
    one_by_one = extract_features(encoder, images, batch_size=1)
    assert np.allclose(whole, one_by_one, atol=1e-5)
    assert torch.equal(encoder.backbone.stem[1].running_mean, stats) and encoder.training


def test_multiclass_labels_use_macro_auroc(tmp_path):
    tiny_store(tmp_path / "data", n_labels=4)
    encoder = tiny_encoder(tmp_path / "simclr-s0", "simclr", 0)
    run(
        config(tmp_path / "data", [encoder], seeds=[0], label_fractions=[1.0], embeddings={"enabled": False}),
        tmp_path / "eval",
    )
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert metrics.query("metric == 'auroc' and domain == 'all'")["value"].between(0.5, 1).all()
    linear_id = (
        "method == 'simclr' and protocol == 'linear' and test_set == 'id' and domain == 'all' and metric == 'auroc'"
    )
    reported = metrics.query(linear_id)["value"]
    store = ImageStore.open(tmp_path / "data")
    assert reported.item() == pytest.approx(probe_auroc(store, encoder, "train", "test"), abs=1e-9)
    assert "balanced_accuracy_val_threshold" not in set(metrics["metric"])  # a threshold is for two classes


def test_fraction_too_small_for_every_class_is_skipped_with_a_note(tmp_path):
    tiny_store(tmp_path / "data")
    encoder = tiny_encoder(tmp_path / "simclr-s0", "simclr", 0)
    run(
        config(
            tmp_path / "data",
            [encoder],
            seeds=[0],
            label_fractions=[0.001, 1.0],
            embeddings={"enabled": False},
            random_baseline=False,
        ),
        tmp_path / "eval",
    )
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert set(metrics["label_fraction"]) == {1.0}
    notes = (tmp_path / "eval" / "notes.txt").read_text()
    assert "label fraction 0.001 of split 'train'" in notes and "label fraction 0.001 of split 'ood_train'" in notes


def test_encoder_of_another_resolution_is_a_one_line_error(tmp_path):
    tiny_store(tmp_path / "data")
    encoder = tiny_encoder(tmp_path / "simclr-s0", "simclr", 0, size=32)
    with pytest.raises(
        CheckpointError, match=r"simclr-s0/encoder.pt was trained on 32x32 images; store .* holds 16x16"
    ):
        run(config(tmp_path / "data", [encoder]), tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_missing_inputs_and_single_class_test_set_are_clear_errors(tmp_path):
    store = tiny_store(tmp_path / "data")
    with pytest.raises(CheckpointError, match="nowhere does not exist"):
        run(config(tmp_path / "data", [tmp_path / "nowhere"]), tmp_path / "eval")
    with pytest.raises(ConfigError, match="no encoder given"):
        run(config(tmp_path / "data", []), tmp_path / "eval")
    meta = store.meta.copy()
    meta.loc[meta["split"] == "ood_test", "label"] = 1
    from cfcl.data.store import write_store
    from support.evaluation import complete_stage

    write_store(
        tmp_path / "one_class", np.asarray(store.images), meta, store.domains, store.labels, extra={"ood_domains": [3]}
    )
    complete_stage(tmp_path / "one_class", "data_synth")
    encoder = tiny_encoder(tmp_path / "simclr-s0", "simclr", 0)
    with pytest.raises(MetricError, match="split 'ood_test' holds a single label"):
        run(config(tmp_path / "one_class", [encoder]), tmp_path / "eval")


def test_domain_predictability_is_high_for_domain_features_and_near_chance_for_noise():
    rng = np.random.default_rng(0)
    domains = rng.choice(4, 2000, p=[0.7, 0.1, 0.1, 0.1])
    chosen = equal_per_domain(domains, 100, seed=0)
    assert np.bincount(domains[chosen]).tolist() == [100] * 4
    coded = np.eye(4)[domains[chosen]] * 3 + rng.normal(size=(400, 4))
    noise = rng.normal(size=(400, 32))
    assert domain_predictability(np.hstack([coded, noise]), domains[chosen], seed=0)[0] > 0.9
    assert abs(domain_predictability(noise, domains[chosen], seed=0)[0] - 0.25) < 0.1


def test_knn_domain_purity_hand_computed():
    # two domains on a line, 0 1 | 10 11: the nearest neighbour always shares the domain (purity 1);
    # with k = 2 half the neighbours do, against a chance of 1/3 (one of the three others): (1/2 - 1/3) / (2/3)
    features, domains = np.array([[0.0], [1.0], [10.0], [11.0]]), np.array([0, 0, 1, 1])
    assert knn_domain_purity(features, domains, k=1) == pytest.approx(1.0)
    assert knn_domain_purity(features, domains, k=2) == pytest.approx(0.25)


def test_clustering_measures_are_near_one_for_domain_clusters_and_near_zero_for_domain_independent_points():
    rng = np.random.default_rng(0)
    domains = np.repeat(np.arange(4), 100)
    centres = rng.normal(size=(4, 16)) * 10
    clustered = centres[domains] + rng.normal(size=(400, 16))
    independent = rng.normal(size=(400, 16))
    assert knn_domain_purity(clustered, domains) > 0.95 and domain_silhouette(clustered, domains) > 0.7
    assert abs(knn_domain_purity(independent, domains)) < 0.1 and abs(domain_silhouette(independent, domains)) < 0.05
    # a weak domain shift within the spread: in between, so the measures rank encoders rather than saturate
    weak, strong = independent + 0.04 * centres[domains], independent + 0.06 * centres[domains]
    assert 0.1 < knn_domain_purity(weak, domains) < knn_domain_purity(strong, domains) < 0.9
    assert domain_silhouette(weak, domains) < domain_silhouette(strong, domains) < 0.5


def store_with_covariates(path, source):
    """The tiny store with an age that raises the label's odds and a sex that does not, listed as covariates."""
    rng = np.random.default_rng(1)
    meta = source.meta.copy()
    meta["age"] = np.round(50 + 15 * meta["label"] + rng.normal(0, 10, len(meta)))
    meta["sex"] = rng.choice(["F", "M"], len(meta))
    store = write_store(
        path,
        np.asarray(source.images),
        meta,
        source.domains,
        source.labels,
        extra={"ood_domains": [3], "covariates": ["age", "sex"]},
    )
    complete_stage(path, "data_synth")
    return store


def test_covariates_baseline_is_a_probe_on_the_covariates_alone_for_every_fraction_seed_and_test_set(
    evaluated, tmp_path
):
    store = store_with_covariates(tmp_path / "data", ImageStore.open(evaluated / "data"))
    encoders = [evaluated / "pretrain" / "simclr-s0", evaluated / "pretrain" / "simclr-s1"]
    run(config(tmp_path / "data", encoders, embeddings={"enabled": False}, random_baseline=False), tmp_path / "eval")
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv").query(
        "metric == 'auroc' and domain == 'all' and subgroup == 'all'"
    )
    covariates = metrics[metrics["method"] == "covariates"]
    assert set(
        zip(covariates["seed"], covariates["label_fraction"], covariates["protocol"], covariates["test_set"])
    ) == {
        (s, f, p, t)
        for s in (0, 1)
        for f in (0.5, 1.0)
        for p, t in (("linear", "id"), ("transfer", "ood"), ("linear", "ood"))
    }
    # the reported value is a probe fitted here on age and sex (one-hot) of every ID training image
    labels = store.meta["label"].to_numpy()
    features = np.column_stack([store.meta["age"], store.meta["sex"] == "M"]).astype(float)
    train, test = store.indices("train"), store.indices("test")
    prob = class_probabilities(fit_probe(features[train], labels[train]), features[test], 2)
    from sklearn.metrics import roc_auc_score

    reported = covariates.query("seed == 0 and label_fraction == 1.0 and protocol == 'linear' and test_set == 'id'")[
        "value"
    ]
    assert reported.item() == pytest.approx(roc_auc_score(labels[test], prob[:, 1]), abs=1e-9)
    assert reported.item() > 0.7  # age carries the label here, with no image at all


def test_a_store_without_the_subgroup_column_skips_subgroups_with_a_note(tmp_path):
    tiny_store(tmp_path / "data")
    encoder = tiny_encoder(tmp_path / "simclr-s0", "simclr", 0)
    run(
        config(
            tmp_path / "data",
            [encoder],
            seeds=[0],
            label_fractions=[1.0],
            embeddings={"enabled": False},
            random_baseline=False,
        ),
        tmp_path / "eval",
    )
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert set(metrics["subgroup"]) == {"all"} and len(metrics) > 0
    assert pd.read_csv(tmp_path / "eval" / "subgroup_gaps.csv").empty
    notes = (tmp_path / "eval" / "notes.txt").read_text()
    assert f"subgroups by 'sex' skipped: {tmp_path / 'data' / 'metadata.csv'} has no 'sex' column\n" in notes


def test_a_subgroup_column_with_one_value_is_skipped_and_unknown_values_belong_to_no_subgroup(tmp_path):
    source = tiny_store(tmp_path / "source", sex=True)
    meta = source.meta.copy()
    for name, sex in (("single", "F"), ("partly_known", np.where(meta.index % 5 == 0, "", meta["sex"]))):
        write_store(
            tmp_path / name,
            np.asarray(source.images),
            meta.assign(sex=sex),
            source.domains,
            source.labels,
            extra={"ood_domains": [3]},
        )
    encoder = tiny_encoder(tmp_path / "simclr-s0", "simclr", 0)
    single = evaluate_module.Evaluation(
        config(tmp_path / "single", [encoder]), ImageStore.open(tmp_path / "single"), tmp_path
    )
    assert single.attributes == {}
    assert single.notes == [
        f"subgroups by 'sex' skipped: {tmp_path / 'single' / 'metadata.csv'} holds 1 value(s) ['F'] in 'sex'"
    ]
    partly = evaluate_module.Evaluation(
        config(tmp_path / "partly_known", [encoder]), ImageStore.open(tmp_path / "partly_known"), tmp_path
    )
    assert partly.notes == [
        f"{len(meta[meta.index % 5 == 0])} image(s) without a 'sex' value belong to no 'sex' subgroup"
    ]
    assert set(partly.attributes["sex"]) == {"", "F", "M"}


def test_label_draws_average_independent_subsets_per_seed_and_split_the_variance(evaluated, tmp_path):
    from sklearn.metrics import roc_auc_score

    from cfcl.contrastive.encoders import load_encoder
    from cfcl.evaluation.subsets import labelled_subset

    encoders = [evaluated / "pretrain" / f"{m}-s{s}" for m in ("simclr", "cf_simclr") for s in (0, 1)]
    cfg = config(
        evaluated / "data",
        encoders,
        label_draws=3,
        embeddings={"enabled": False},
        random_baseline=False,
        covariates_baseline=False,
    )
    run(cfg, tmp_path / "eval")
    store = ImageStore.open(evaluated / "data")
    features = extract_features(load_encoder(encoders[0])[0], store.images, 256)
    labels, train, test = store.meta["label"].to_numpy(), store.indices("train"), store.indices("test")
    by_hand = []
    for draw in range(3):
        rows = labelled_subset(store.meta, train, 0.5, 0, "train", draw)
        probe = fit_probe(features[rows], labels[rows], cfg.probe.C, cfg.probe.max_iter, 0)
        by_hand.append(roc_auc_score(labels[test], class_probabilities(probe, features[test], 2)[:, 1]))
    assert len(set(by_hand)) == 3  # three different labelled subsets
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    row = metrics.query(
        "method == 'simclr' and seed == 0 and protocol == 'linear' and test_set == 'id' and "
        "label_fraction == 0.5 and domain == 'all' and subgroup == 'all' and metric == 'auroc'"
    )
    assert row["value"].item() == pytest.approx(np.mean(by_hand))
    variance = pd.read_csv(tmp_path / "eval" / "variance_components.csv")
    pair = variance.query(
        "method == 'cf_simclr' and protocol == 'linear' and test_set == 'id' and label_fraction == 0.5 "
        "and domain == 'all'"
    )
    assert (pair["n_seeds"].item(), pair["n_draws"].item()) == (2, 3) and pair["sd_draw"].item() > 0
    assert pair["sd_test"].item() > 0 and pair["half_width"].item() > 0
    assert (variance.query("label_fraction == 1.0")["n_draws"] == 1).all()  # all labels: one draw
    per_domain = variance.query(
        "method == 'cf_simclr' and protocol == 'linear' and test_set == 'id' and label_fraction == 0.5"
    )
    assert "all" in set(per_domain["domain"]) and len(per_domain) > 1  # the whole set and each scanner
    assert (per_domain["seeds_needed"].dropna() >= 2).all()
    (tmp_path / "run").mkdir()
    (tmp_path / "eval").rename(tmp_path / "run" / "eval")
    run_report(tmp_path / "run")
    summary = (tmp_path / "run" / "report" / "summary.md").read_text()
    assert "Where the spread of a gain comes from" in summary and "cf_simclr (linear, id)" in summary


def write_true_cf(store: ImageStore) -> ImageStore:
    """The tiny store's true counterfactuals: its scanners differ by an intensity offset of 0.12 per domain."""
    n, d = len(store), len(DOMAINS)
    own = store.meta["domain"].to_numpy()
    shifted = [np.clip(store.images / 255 + 0.12 * (target - own)[:, None, None], 0, 1) for target in range(d)]
    images = (np.stack(shifted, axis=1).reshape(-1, *store.size) * 255).astype(np.uint8)
    meta = pd.DataFrame(
        {
            "index": np.arange(n * d),
            "source_index": np.repeat(np.arange(n), d),
            "target_domain": np.tile(np.arange(d), n),
        }
    )
    meta["split"], meta["domain"] = np.repeat(store.meta["split"].to_numpy(), d), meta["target_domain"]
    return write_store(
        store.path / "true_cf",
        images,
        meta,
        DOMAINS,
        store.labels,
        kind="counterfactuals",
        extra={"source_store": store.content_hash},
    )


def test_the_rendered_test_set_is_every_id_test_patient_under_every_scanner(tmp_path):
    from sklearn.metrics import roc_auc_score

    from cfcl.contrastive.encoders import load_encoder

    store = tiny_store(tmp_path / "data")
    cf = write_true_cf(store)
    encoder = tiny_encoder(tmp_path / "pretrain" / "simclr-s0", "simclr", 0)
    plain = dict(
        seeds=[0],
        label_fractions=[1.0],
        random_baseline=False,
        covariates_baseline=False,
        embeddings={"enabled": False},
    )
    run(config(tmp_path / "data", [encoder], **plain), tmp_path / "eval")
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    rendered = metrics[(metrics.test_set == "rendered") & (metrics.metric == "auroc") & (metrics.subgroup == "all")]
    assert set(rendered.protocol) == {"linear", "ceiling"}  # the ID probe, and each scanner's own probe beside it
    rendered = rendered[rendered.protocol == "linear"]
    # one row per rendering scanner; no pooled row: the same patients under every scanner are not one population
    assert sorted(rendered.domain) == sorted(DOMAINS)
    # Independently: the probe on every ID training image, scored on the test patients as each scanner renders them.
    model = load_encoder(encoder)[0]
    features, cf_features = extract_features(model, store.images), extract_features(model, cf.images)
    labels, train, test = store.meta["label"].to_numpy(), store.indices("train"), store.indices("test")
    probe = fit_probe(features[train], labels[train])
    for d, name in enumerate(DOMAINS):
        rows = cf.meta[(cf.meta.target_domain == d) & cf.meta.source_index.isin(test)]
        assert len(rows) == len(test)  # every test patient, whichever scanner imaged it
        expected = roc_auc_score(
            labels[rows.source_index], class_probabilities(probe, cf_features[rows.index], 2)[:, 1]
        )
        assert rendered.loc[rendered.domain == name, "value"].item() == pytest.approx(expected), name
    run(config(tmp_path / "data", [encoder], **plain, rendered_test=False), tmp_path / "eval_off")
    assert "rendered" not in set(pd.read_csv(tmp_path / "eval_off" / "metrics.csv").test_set)


def test_headroom_is_each_scanners_ceiling_probe_its_gap_to_the_id_probe_and_counterfactual_invariance(tmp_path):
    from scipy.spatial.distance import cdist
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from cfcl.contrastive.encoders import load_encoder

    store = tiny_store(tmp_path / "data")
    cf = write_true_cf(store)
    encoder = tiny_encoder(tmp_path / "pretrain" / "simclr-s0", "simclr", 0)
    other_encoder = tiny_encoder(tmp_path / "pretrain" / "cf_simclr-s0", "cf_simclr", 0)
    plain = dict(seeds=[0], label_fractions=[1.0], random_baseline=False, covariates_baseline=False)
    run(config(tmp_path / "data", [encoder, other_encoder], **plain), tmp_path / "eval")
    every = pd.read_csv(tmp_path / "eval" / "metrics.csv").query("subgroup == 'all'")
    value = every[every.method == "simclr"].set_index(["protocol", "test_set", "domain", "metric"])["value"]
    model = load_encoder(encoder)[0]
    features, cf_features = extract_features(model, store.images), extract_features(model, cf.images)
    labels, meta = store.meta["label"].to_numpy(), store.meta
    train, val, test = (store.indices(s) for s in ("train", "val", "test"))
    for d, name in enumerate(DOMAINS):
        # independently: a probe on every training patient as scanner d renders them, tested on the test patients
        # it renders
        under = {
            split: cf.meta[(cf.meta.target_domain == d) & cf.meta.source_index.isin(rows)]
            for split, rows in (("train", train), ("test", test))
        }
        probe = fit_probe(cf_features[under["train"].index], labels[under["train"].source_index])
        prob = class_probabilities(probe, cf_features[under["test"].index], 2)[:, 1]
        ceiling = roc_auc_score(labels[under["test"].source_index], prob)
        assert value["ceiling", "rendered", name, "auroc"] == pytest.approx(ceiling), name
        gap = ceiling - value["linear", "rendered", name, "auroc"]
        assert value["linear", "rendered", name, "robustness_gap"] == pytest.approx(gap), name
    # the ID probe at the threshold with the best balanced accuracy on the ID validation images, found by trying each
    probe = fit_probe(features[train], labels[train])
    on_val = class_probabilities(probe, features[val], 2)[:, 1]
    best = max(sorted(set(on_val), reverse=True), key=lambda t: balanced_accuracy_score(labels[val], on_val >= t))
    on_test = class_probabilities(probe, features[test], 2)[:, 1]
    expected = balanced_accuracy_score(labels[test], on_test >= best)
    assert value["linear", "id", "all", "balanced_accuracy_val_threshold"] == pytest.approx(expected)
    # counterfactual invariance: each test image's distance to itself on the other scanners over the median distance
    # between two test images of different patients
    other = cf.meta[
        cf.meta.source_index.isin(test) & (cf.meta.target_domain != meta["domain"][cf.meta.source_index].to_numpy())
    ]
    moved = np.linalg.norm(cf_features[other.index] - features[other.source_index], axis=1).mean()
    distances = cdist(features[test], features[test])
    patients = meta["patient_id"].to_numpy()[test]
    between = distances[np.triu(patients[:, None] != patients[None, :], k=1)]
    table = pd.read_csv(tmp_path / "eval" / "domain_predictability.csv").set_index("method")
    assert table.loc["simclr", "cf_invariance"] == pytest.approx(moved / np.median(between))
    # the gap and the invariance are compared with the reference method by seed, as AUROC is
    gains = pd.read_csv(tmp_path / "eval" / "seed_gains.csv").set_index(["metric", "domain"])
    gaps = every[every.metric == "robustness_gap"].pivot(index="domain", columns="method", values="value")
    for name in DOMAINS:
        assert gains.loc[("robustness_gap", name), "gain"] == pytest.approx(
            gaps.loc[name, "cf_simclr"] - gaps.loc[name, "simclr"]
        )
    invariance = table.loc["cf_simclr", "cf_invariance"] - table.loc["simclr", "cf_invariance"]
    assert gains.loc[("cf_invariance", "all"), "gain"] == pytest.approx(invariance)
    run(config(tmp_path / "data", [encoder], **plain, rendered_test=False), tmp_path / "eval_off")
    off = pd.read_csv(tmp_path / "eval_off" / "metrics.csv")
    assert "ceiling" not in set(off.protocol) and "robustness_gap" not in set(off.metric)


# ---- a multi-label store: one head over every finding, scored per finding and by the mean ----------------------


@pytest.fixture(scope="module")
def evaluated_findings(tmp_path_factory):
    """A store with three findings, some missing: two methods (seeds 0, 1), linear probes and one epoch of
    fine-tuning; a label fraction too small for every finding."""
    root = tmp_path_factory.mktemp("findings")
    findings_store(root / "data", sex=True)
    encoders = [tiny_encoder(root / "pretrain" / f"{m}-s{s}", m, s) for m in ("simclr", "cf_simclr") for s in (0, 1)]
    finetune = {"enabled": True, "supervised": False, "batch_size": 32, "trainer": {"max_epochs": 1}}
    cfg = config(
        root / "data",
        encoders,
        label_fractions=[0.02, 0.5, 1.0],
        embeddings={"enabled": False},
        finetune={**finetune, "trainer": {**finetune["trainer"], "progress_bar": False, "log_every_n_steps": 1}},
    )
    run(cfg, root / "eval")
    return root


def test_a_store_with_findings_is_scored_per_finding_and_by_the_mean_over_findings(evaluated_findings):
    metrics = pd.read_csv(evaluated_findings / "eval" / "metrics.csv")
    assert list(metrics.columns) == COLUMNS
    per_finding = {f"{m}:{f}" for m in ("auroc", "auroc_ci_low", "auroc_ci_high") for f in FINDING_NAMES}
    assert set(metrics["metric"]) == {"mean_auroc", "mean_auroc_ci_low", "mean_auroc_ci_high", *per_finding}
    combos = set(metrics[["method", "protocol", "test_set"]].itertuples(index=False, name=None))
    for method in ("simclr", "cf_simclr"):
        assert {(method, p, t) for p, t in [("linear", "id"), ("linear", "ood"), ("transfer", "ood")]} <= combos
        assert {(method, "finetune", "id"), (method, "finetune", "ood")} <= combos
    wide = metrics.pivot_table(index=COLUMNS[:7], columns="metric", values="value")
    assert len(wide) > 50 and not wide.isna().any(axis=None)
    findings = wide[[f"auroc:{f}" for f in FINDING_NAMES]]
    np.testing.assert_allclose(wide["mean_auroc"], findings.mean(axis=1), atol=1e-12)
    for metric in ["mean_auroc", *findings.columns]:
        low, high = (wide[metric.replace("auroc", f"auroc_ci_{b}", 1)] for b in ("low", "high"))
        assert ((low <= wide[metric]) & (wide[metric] <= high)).all(), metric
    assert set(metrics["subgroup"]) == {"all", "sex=F", "sex=M"}
    # seed 1's draw of 2% of the labels lacks a finding: skipped, with a note (seed 0's holds every one)
    assert set(metrics.loc[metrics["label_fraction"] == 0.02, "seed"]) == {0}
    notes = (evaluated_findings / "eval" / "notes.txt").read_text()
    assert re.search(r"label fraction 0\.02 of split 'train' \(\d+ images\) holds finding\(s\) \[.+\] not both", notes)


def test_each_findings_auroc_is_a_probe_fitted_here_on_the_images_where_that_finding_is_known(evaluated_findings):
    store = ImageStore.open(evaluated_findings / "data")
    metrics = pd.read_csv(evaluated_findings / "eval" / "metrics.csv").query("label_fraction == 1.0")
    wide = metrics.pivot_table(index=COLUMNS[:7], columns="metric", values="value")
    findings = store.finding_matrix()
    for method in ("simclr", "cf_simclr"):
        features = extract_features(
            load_encoder(evaluated_findings / "pretrain" / f"{method}-s1")[0], store.images, 256
        )
        for protocol, test_set, train_split, test_split in PROTOCOL_SPLITS:
            train, test = store.indices(train_split), store.indices(test_split)
            for f, name in enumerate(FINDING_NAMES):
                fit = train[~np.isnan(findings[train, f])]
                scored = test[~np.isnan(findings[test, f])]
                probe = fit_probe(features[fit], findings[fit, f].astype(int))
                expected = roc_auc_score(findings[scored, f], probe.predict_proba(features[scored])[:, 1])
                reported = wide.loc[(method, 1, protocol, 1.0, test_set, "all", "all"), f"auroc:{name}"]
                assert reported == pytest.approx(expected, abs=1e-9), (method, protocol, name)


def test_fine_tuning_a_store_with_findings_predicts_every_finding(evaluated_findings):
    store = ImageStore.open(evaluated_findings / "data")
    runs = sorted((evaluated_findings / "eval" / "finetune").glob("simclr-s0-f1-id-*"))
    assert len(runs) == 1
    prob = np.load(runs[0] / "test_prob.npy")
    assert prob.shape == (len(store.indices("test")), len(FINDING_NAMES)) and ((prob > 0) & (prob < 1)).all()
    metrics = pd.read_csv(evaluated_findings / "eval" / "metrics.csv")
    tuned = metrics.query("method == 'simclr' and seed == 0 and protocol == 'finetune' and test_set == 'id'")
    tuned = tuned.query("label_fraction == 1.0 and domain == 'all' and subgroup == 'all'").set_index("metric")["value"]
    findings = store.finding_matrix(store.indices("test"))
    for f, name in enumerate(FINDING_NAMES):
        known = ~np.isnan(findings[:, f])
        assert tuned[f"auroc:{name}"] == pytest.approx(roc_auc_score(findings[known, f], prob[known, f]), abs=1e-9)


def test_seed_gains_and_bootstrap_gains_of_a_store_with_findings(evaluated_findings):
    metrics = pd.read_csv(evaluated_findings / "eval" / "metrics.csv").query("subgroup == 'all'")
    keys = ["method", "protocol", "label_fraction", "test_set", "domain", "metric", "seed"]
    values = metrics.set_index(keys)["value"].sort_index()
    seed_gains = pd.read_csv(evaluated_findings / "eval" / "seed_gains.csv")
    assert set(seed_gains["metric"]) == {"mean_auroc", *(f"auroc:{f}" for f in FINDING_NAMES)}

    def paired(method, key):  # method minus simclr, per seed both have (seed 1 skipped some)
        return (values.loc[(method, *key)] - values.loc[("simclr", *key)]).dropna()

    for row in seed_gains.itertuples():
        diffs = paired(row.method, (row.protocol, row.label_fraction, row.test_set, row.domain, row.metric))
        assert row.n_seeds == len(diffs) and row.gain == pytest.approx(diffs.mean(), abs=1e-12)
    assert set(seed_gains["n_seeds"]) == {1, 2}
    gains = pd.read_csv(evaluated_findings / "eval" / "gains.csv")  # the paired bootstrap: of the mean AUROC
    assert set(gains["method"]) == {"cf_simclr", "random"} and len(gains) > 10
    for row in gains.itertuples():
        key = (row.protocol, row.label_fraction, row.test_set, row.domain, "mean_auroc")
        expected = paired(row.method, key).mean()
        assert row.gain == pytest.approx(expected, abs=1e-9) and row.ci_low <= row.gain <= row.ci_high, key
    variance = pd.read_csv(evaluated_findings / "eval" / "variance_components.csv")
    assert len(variance) == len(gains)


def test_the_report_of_a_store_with_findings_leads_with_the_mean_and_shows_each_finding(evaluated_findings, tmp_path):
    run_report(evaluated_findings, tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "AUROC (mean over findings) gain of each method over simclr" in summary.split("## Verdict")[1]
    headline = summary.split("## Headline results")[1].split("\n## ")[0]
    assert "**AUROC (mean over findings) at 100% labels (mean ± std over 2 seeds)**" in headline
    assert "| cf_simclr (linear) | 0." in headline
    section = summary.split("## AUROC per finding")[1].split("\n## ")[0]
    assert "| method (protocol, test set) | Pleural Effusion | Edema | Nodule | mean |" in section
    for row in ("simclr (linear, id)", "simclr (transfer, ood)", "cf_simclr (finetune, ood)"):
        assert f"| {row} | 0." in section
    index = (tmp_path / "report" / "index.html").read_text()
    assert "AUROC per finding" in index and "Pleural Effusion" in index
