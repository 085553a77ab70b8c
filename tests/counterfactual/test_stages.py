"""The generator stages end to end on a tiny store: cf train, cf finetune, cf generate (CLI)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from cfcl.cli import main
from cfcl.counterfactual import generate_store
from cfcl.counterfactual.classifier.model import build_classifier, save_classifier
from cfcl.counterfactual.generator.checkpoint import load_generator, save_generator
from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
from cfcl.counterfactual.generator.inference import counterfactual
from cfcl.counterfactual.parents import intervene, parent_specs, parents_from_store
from cfcl.counterfactual.quality.inputs import _judge_identity, _recorded_guides
from cfcl.data.store import ImageStore
from cfcl.stage import fingerprint
from support.cf_stores import make_store
from support.cli import TINY_GENERATOR, Cfcl, sets


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfstages")
    store = make_store(root / "store", true_cf=False)
    assert main(["cf", "train", "--data", str(store.path), "--out", str(root / "gen"), *sets(TINY_GENERATOR)]) == 0
    return root, store


def test_a_second_cli_call_of_a_complete_stage_skips_it_and_the_runner_returns_its_manifest(trained, capsys):
    from cfcl.config import build_config
    from cfcl.counterfactual.config import CFTrainConfig
    from cfcl.counterfactual.generator import train

    root, store = trained
    out = root / "gen"
    stamp = (out / "generator.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["cf", "train", "--data", str(store.path), "--out", str(out), *sets(TINY_GENERATOR)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "generator.pt").stat().st_mtime_ns == stamp
    config = build_config(CFTrainConfig, None, [f"data={store.path}", *TINY_GENERATOR])
    assert train.run(config, out) == json.loads((out / "manifest.json").read_text())
    assert (out / "generator.pt").stat().st_mtime_ns == stamp


def test_train_writes_a_generator_stage(trained):
    root, store = trained
    out = root / "gen"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "cf_model"
    for name in (
        "generator.pt",
        "config.yaml",
        "counterfactual_grid.png",
        "prior_samples.png",
        "training_curve.png",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
    ):
        assert (out / name).is_file(), name
    model, info = load_generator(out)
    assert info["store"] == store.content_hash and info["image_size"] == 16 and info["steps"] > 0
    assert model.specs[0].seen == (0, 1, 2)  # the OOD domain 3 is never a training image
    metrics = (out / "logs" / "metrics.csv").read_text()
    assert "train/nelbo_step" in metrics and "val/nelbo" in metrics


def test_training_is_deterministic(trained, tmp_path):
    root, store = trained
    assert (
        main(["cf", "train", "--data", str(store.path), "--out", str(tmp_path / "again"), *sets(TINY_GENERATOR)]) == 0
    )
    a, _ = load_generator(root / "gen")
    b, _ = load_generator(tmp_path / "again")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_skips_non_finite_updates(trained, tmp_path):
    _, store = trained
    args = [
        "cf",
        "train",
        "--data",
        str(store.path),
        "--out",
        str(tmp_path / "skip"),
        *sets([*TINY_GENERATOR, "trainer.max_epochs=1", "optim.grad_skip=1e-9"]),
    ]
    assert main(args) == 0
    model, info = load_generator(tmp_path / "skip")
    assert info["skipped_updates"] == info["steps"] > 0
    torch.manual_seed(0)
    fresh = type(model)(16, model.arch, model.specs)
    assert all(
        torch.allclose(p, q, atol=1e-6) for p, q in zip(fresh.state_dict().values(), model.state_dict().values())
    )


def test_a_diverged_training_is_a_one_line_error_and_writes_no_generator(trained, tmp_path, monkeypatch, capsys):
    from cfcl.counterfactual.generator import train

    def diverging_fit(trainer, *args, **kwargs):
        fit(trainer, *args, **kwargs)
        trainer.callback_metrics["val/nelbo"] = torch.tensor(float("nan"))  # as after the loss blew up

    fit = train.fit
    monkeypatch.setattr(train, "fit", diverging_fit)
    _, store = trained
    out = tmp_path / "diverged"
    overrides = sets([*TINY_GENERATOR, "trainer.max_epochs=1"])
    assert main(["cf", "train", "--data", str(store.path), "--out", str(out), *overrides]) != 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the generator diverged: val/nelbo is nan" in error and "optim.lr" in error
    assert not (out / "generator.pt").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] != "complete"


@pytest.mark.slow
def test_generate_writes_every_source_times_other_domain(trained, tmp_path):
    root, store = trained
    out = tmp_path / "cf"
    assert (
        main(
            [
                "cf",
                "generate",
                "--generator",
                str(root / "gen"),
                "--data",
                str(store.path),
                "--out",
                str(out),
                "--set",
                "batch_size=7",
                "--set",
                "chunk=10",
                "--set",
                "progress_bar=false",
            ]
        )
        == 0
    )
    cf = ImageStore.open(out)
    train = store.indices("train")
    assert cf.kind == "counterfactuals" and len(cf) == 2 * len(train)
    assert cf.info["source_store"] == store.content_hash and len(cf.info["generator"]) == 16
    meta = cf.meta
    assert set(meta["source_index"]) == set(train)
    assert (meta["target_domain"] != store.meta["domain"].to_numpy()[meta["source_index"]]).all()
    assert set(meta["target_domain"]) == {0, 1, 2} and (meta["domain"] == meta["target_domain"]).all()
    assert (meta["label"].to_numpy() == store.meta["label"].to_numpy()[meta["source_index"]]).all()
    table = cf.counterfactual_table(len(store), len(store.domains))
    assert (table[train] >= 0).sum() == len(cf) and (table[:, 3] == -1).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["generator"] == cf.info["generator"]
    model, _ = load_generator(root / "gen")
    rows = meta.iloc[::5]
    source = rows["source_index"].to_numpy()
    x = torch.from_numpy(store.images[source]).float()[:, None] / 255
    pa = parents_from_store(store, source, model.specs)
    with torch.no_grad():
        expected = counterfactual(model, x, pa, intervene(pa, domain=torch.as_tensor(rows["target_domain"].to_numpy())))
    written = torch.from_numpy(cf.images[rows["index"].to_numpy()]).float()
    assert (written - (expected[:, 0] * 255).round()).abs().max() <= 1


def _interrupt_after_two_chunks(monkeypatch) -> list:
    """Generation raises KeyboardInterrupt at its third chunk; returns the list of calls (clear it to go on)."""
    calls = []
    real = generate_store.generate_chunk

    def fail_after_two(*a, **k):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(generate_store, "generate_chunk", fail_after_two)
    return calls


def test_generate_resumes_an_interrupted_run(trained, tmp_path, monkeypatch):
    root, store = trained
    args = [
        "cf",
        "generate",
        "--generator",
        str(root / "gen"),
        "--data",
        str(store.path),
        "--set",
        "chunk=16",
        "--set",
        "progress_bar=false",
    ]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    real = generate_store.generate_chunk
    calls = _interrupt_after_two_chunks(monkeypatch)
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 130
    assert not (tmp_path / "resumed" / "store.json").exists()
    done = json.loads((tmp_path / "resumed" / "progress.json").read_text())["done"]
    assert done == [0, 16]
    calls.clear()
    monkeypatch.setattr(generate_store, "generate_chunk", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 0
    total = -(-2 * len(store.indices("train")) // 16)
    assert len(calls) == total - 2
    assert np.array_equal(ImageStore.open(tmp_path / "resumed").images, ImageStore.open(tmp_path / "full").images)


def test_generate_bad_targets(trained, tmp_path, capsys):
    root, store = trained
    base = ["cf", "generate", "--generator", str(root / "gen"), "--data", str(store.path), "--out", str(tmp_path / "x")]
    assert main([*base, "--set", "target_domains=[3]"]) == 2
    assert "target domain(s) ood never seen by the generator" in capsys.readouterr().err
    assert main([*base, "--set", "target_domains=[0]", "--set", "include_ood=true"]) == 0
    assert set(ImageStore.open(tmp_path / "x").meta["target_domain"]) == {0}


def test_train_bad_input(trained, tmp_path, capsys):
    _, store = trained
    assert (
        main(["cf", "train", "--data", str(store.path), "--out", str(tmp_path / "t"), "--set", "parents=[domain, sex]"])
        == 2
    )
    err = capsys.readouterr().err
    assert "parent 'sex' is not a column of metadata.csv" in err and err.count("\n") == 1
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert (
        main(["cf", "generate", "--generator", str(corrupt), "--data", str(store.path), "--out", str(tmp_path / "g")])
        == 2
    )
    assert "corrupt" in capsys.readouterr().err


def save_guide(path, role, seed=0, parent="domain", values=("major", "middle", "rare", "ood")):
    torch.manual_seed(seed)
    model = build_classifier("cnn", len(values), widths=[4, 8]).eval()
    info = {
        "role": role,
        "parent": parent,
        "values": list(values),
        "trained_values": list(range(min(3, len(values)))),
        "image_size": [16, 16],
        "seed": seed,
    }
    return save_classifier(path, model, info)


@pytest.mark.slow
def test_finetune_trains_the_decoder_only(trained, tmp_path, capsys):
    root, store = trained
    save_guide(tmp_path / "guide", "guide")
    save_guide(tmp_path / "judge", "judge")
    base = [
        "cf",
        "finetune",
        "--generator",
        str(root / "gen"),
        "--data",
        str(store.path),
        "--set",
        "lr=0.001",
        "--set",
        "trainer.max_epochs=1",
        "--set",
        "batch_size=16",
        "--set",
        "bound_batches=2",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        "grid_images=4",
        "--set",
        "trainer.log_every_n_steps=1",
    ]
    assert main([*base, "--guide", str(tmp_path / "judge"), "--out", str(tmp_path / "bad")]) == 2
    assert "the judge never guides" in capsys.readouterr().err
    assert main([*base, "--guide", str(tmp_path / "guide"), "--out", str(tmp_path / "ft")]) == 0
    before, _ = load_generator(root / "gen")
    after, info = load_generator(tmp_path / "ft")
    assert info["elbo_bound"] == pytest.approx(info["initial_nelbo"] * 1.02) and info["steps"] > 0
    assert info["finetuned_from"] and info["guide"] and info["store"] == store.content_hash
    old, new = before.state_dict(), after.state_dict()
    encoder = [k for k in old if k.split(".")[0] in ("stem", "enc_levels", "enc_down")]
    decoder = [k for k in old if k.split(".")[0] in ("dec_levels", "head", "head_parents")]
    assert encoder and all(torch.equal(old[k], new[k]) for k in encoder)
    assert any(not torch.equal(old[k], new[k]) for k in decoder)
    metrics = (tmp_path / "ft" / "logs" / "metrics.csv").read_text()
    assert "train/multiplier_step" in metrics and "train/guide_accuracy_step" in metrics
    assert "train/round_trip_mae_step" in metrics and "train/round_trip_multiplier_step" in metrics
    # each step minimised guide CE + lambda (nELBO - bound) + mu (round trip - bound) with the multipliers of the
    # step before (defaults 1 and 10), then raised each multiplier by its rate (10, 200) times the violation,
    # floored at 0
    steps = pd.read_csv(tmp_path / "ft" / "logs" / "metrics.csv").dropna(subset=["train/loss_step"]).sort_values("step")
    assert len(steps) == info["steps"]
    bound, lam, mu = info["elbo_bound"], 1.0, 10.0
    for step in steps.to_dict("records"):
        nelbo, round_trip = step["train/nelbo_step"], step["train/round_trip_mae_step"]
        expected = step["train/ce_step"] + lam * (nelbo - bound) + mu * (round_trip - 0.015)
        assert step["train/loss_step"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
        lam, mu = max(0.0, lam + 10 * (nelbo - bound)), max(0.0, mu + 200 * (round_trip - 0.015))
        assert step["train/multiplier_step"] == pytest.approx(lam, rel=1e-4, abs=1e-6)
        assert step["train/round_trip_multiplier_step"] == pytest.approx(mu, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_finetune_guided_by_the_scanner_and_sex_minimises_the_mean_of_their_cross_entropies(tmp_path):
    store = make_store(tmp_path / "store", true_cf=False, sexes=["F", "M"])
    torch.manual_seed(0)
    arch = HVAEArch(widths=[8, 8, 16], blocks=[1, 1, 1], latent_channels=4, stochastic_max_res=8)
    save_generator(
        tmp_path / "gen",
        HVAE(16, arch, parent_specs(store, ["domain", "sex"], store.indices("train"))),
        {"store": store.content_hash, "domains": store.domains},
    )
    scanner, sex = (
        save_guide(tmp_path / "guide", "guide"),
        save_guide(tmp_path / "guide_sex", "guide", 1, "sex", ("F", "M")),
    )
    argv = [
        "cf",
        "finetune",
        "--generator",
        str(tmp_path / "gen"),
        "--data",
        str(store.path),
        "--out",
        str(tmp_path / "ft"),
        "--guide",
        str(tmp_path / "guide"),
        "--guide",
        str(tmp_path / "guide_sex"),
        *sets(
            [
                "batch_size=16",
                "bound_batches=2",
                "grid_images=4",
                "trainer.max_epochs=1",
                "trainer.progress_bar=false",
                "trainer.log_every_n_steps=1",
            ]
        ),
    ]
    assert main(argv) == 0
    _, info = load_generator(tmp_path / "ft")
    assert info["guide"] == [fingerprint(scanner), fingerprint(sex)] and info["steps"] > 0
    # neither guide can judge the generator it guided
    assert _judge_identity(tmp_path / "guide_sex") | _judge_identity(tmp_path / "guide") <= _recorded_guides(
        tmp_path / "ft", info["guide"]
    )
    steps = pd.read_csv(tmp_path / "ft" / "logs" / "metrics.csv").dropna(subset=["train/loss_step"])
    assert len(steps) == info["steps"]
    mean = (steps["train/ce_domain_step"] + steps["train/ce_sex_step"]) / 2
    assert np.allclose(steps["train/ce_step"], mean, rtol=1e-5) and not np.allclose(
        steps["train/ce_step"], steps["train/ce_sex_step"]
    )
    assert steps["train/guide_accuracy_sex_step"].between(0, 1).all() and "train/guide_accuracy_domain_step" in steps
    # the guides are frozen, BatchNorm statistics included: the sex guide in the last training checkpoint is the
    # one given
    trained = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    given = torch.load(sex, weights_only=True)["state_dict"]
    assert given and all(torch.equal(trained[f"guides.sex.{k}"], v) for k, v in given.items())


@pytest.mark.slow
def test_finetune_round_trip_constraint_is_optional_and_validated(trained, tmp_path, capsys):
    root, store = trained
    save_guide(tmp_path / "guide", "guide")
    base = [
        "cf",
        "finetune",
        "--generator",
        str(root / "gen"),
        "--data",
        str(store.path),
        "--guide",
        str(tmp_path / "guide"),
        "--set",
        "trainer.max_epochs=1",
        "--set",
        "batch_size=16",
        "--set",
        "bound_batches=2",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        "grid_images=4",
        "--set",
        "trainer.log_every_n_steps=1",
    ]
    assert main([*base, "--set", "round_trip_bound=-0.01", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "round_trip_bound" in err and err.count("\n") == 1
    assert main([*base, "--set", "round_trip_bound=null", "--out", str(tmp_path / "off")]) == 0
    metrics = (tmp_path / "off" / "logs" / "metrics.csv").read_text()
    assert "train/guide_accuracy_step" in metrics and "round_trip" not in metrics


def test_train_resumes_an_interrupted_run(trained, tmp_path):
    root, store = trained
    out = tmp_path / "gen"
    shutil.copytree(root / "gen", out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))  # as if killed after epoch 2
    (out / "generator.pt").unlink()
    last = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert main(["cf", "train", "--data", str(store.path), "--out", str(out), *sets(TINY_GENERATOR)]) == 0
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns == last  # not trained again
    resumed, info = load_generator(out)
    original, original_info = load_generator(root / "gen")
    assert info["steps"] == original_info["steps"]
    assert all(torch.equal(p, q) for p, q in zip(resumed.state_dict().values(), original.state_dict().values()))


@pytest.mark.slow
def test_generate_split_over_two_processes_matches_one_and_resumes_a_one_process_run(trained, tmp_path, monkeypatch):

    root, store = trained
    args = [
        "cf",
        "generate",
        "--generator",
        str(root / "gen"),
        "--data",
        str(store.path),
        "--set",
        "chunk=16",
        "--set",
        "progress_bar=false",
    ]
    two = ["--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    one = ImageStore.open(tmp_path / "one")

    sharded = Cfcl([*args, "--out", tmp_path / "two", *two], tmp_path / "two-log")
    # Meanwhile: a one-process run interrupted after two chunks, which two processes then finish.
    _interrupt_after_two_chunks(monkeypatch)
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 130
    partial = np.load(tmp_path / "resumed" / "images.npy.partial", mmap_mode="r+")
    partial[:32] = 7  # marks the two chunks written: a resume keeps them, a fresh start would overwrite them
    partial.flush()
    del partial
    assert sharded.wait(300) == 0, sharded.err[-3000:]
    resumed = Cfcl([*args, "--out", tmp_path / "resumed", *two], tmp_path / "resumed-log")
    assert resumed.wait(300) == 0, resumed.err[-3000:]

    two_store, resumed_store = ImageStore.open(tmp_path / "two"), ImageStore.open(tmp_path / "resumed")
    assert np.array_equal(two_store.images, one.images) and two_store.content_hash == one.content_hash
    assert (resumed_store.images[:32] == 7).all() and np.array_equal(resumed_store.images[32:], one.images[32:])
    for folder in ("two", "resumed"):
        assert ImageStore.open(tmp_path / folder).meta.equals(one.meta), folder
        assert (
            not list((tmp_path / folder).glob("progress*.json"))
            and not (tmp_path / folder / "images.npy.partial").exists()
        )
        assert json.loads((tmp_path / folder / "manifest.json").read_text())["status"] == "complete"


def test_generate_with_a_source_reconstructs_its_rows_of_the_same_pairs(trained, tmp_path, capsys):
    """The oracle-recon control's store: the true counterfactuals' own rows, each image decoded by the generator."""
    root, store = trained
    with_truth = make_store(tmp_path / "store", true_cf=True)  # the fixture's store, with its true counterfactuals
    assert with_truth.content_hash == store.content_hash
    truth = ImageStore.open(tmp_path / "store" / "true_cf")
    out = tmp_path / "recon"
    assert (
        main(
            [
                "cf",
                "generate",
                "--generator",
                str(root / "gen"),
                "--data",
                str(with_truth.path),
                "--out",
                str(out),
                "--set",
                f"source={truth.path}",
                "--set",
                "batch_size=7",
                "--set",
                "progress_bar=false",
            ]
        )
        == 0
    )
    recon = ImageStore.open(out)
    own = store.meta["domain"].to_numpy()[truth.meta["source_index"]]
    pairs = (
        truth.meta["split"].eq("train")
        & truth.meta["target_domain"].isin([0, 1, 2])
        & (truth.meta["target_domain"] != own)
    )
    expected = truth.meta[pairs.to_numpy()]
    assert list(recon.meta.columns) == list(truth.meta.columns)
    assert recon.meta.drop(columns="index").equals(expected.drop(columns="index").reset_index(drop=True))
    assert np.array_equal(recon.meta["index"], np.arange(len(expected)))
    assert recon.info["source_store"] == store.content_hash and recon.info["reconstructed"] == truth.content_hash
    model, _ = load_generator(root / "gen")
    x = torch.from_numpy(truth.images[expected["index"].to_numpy()]).float()[:, None] / 255
    pa = intervene(
        parents_from_store(store, expected["source_index"].to_numpy(), model.specs),
        domain=torch.as_tensor(expected["target_domain"].to_numpy()),
    )
    with torch.no_grad():
        posterior = model.decode_posterior(pa, model.encode(x))
        # With its abducted pixel noise the reconstruction would be the true counterfactual itself.
        assert (counterfactual(model, x, pa, pa) - x).abs().max() < 1e-4
    written = torch.from_numpy(recon.images[:]).float()
    assert (written - (posterior.mu.clamp(0, 1)[:, 0] * 255).round()).abs().max() <= 1
    assert (written - x[:, 0] * 255).abs().mean() > 1.0
    assert (
        main(
            [
                "cf",
                "generate",
                "--generator",
                str(root / "gen"),
                "--data",
                str(store.path),
                "--out",
                str(tmp_path / "x"),
                "--set",
                f"source={store.path}",
            ]
        )
        == 2
    )
    assert "is an image store, not a counterfactual store" in capsys.readouterr().err
