"""``cfcl pretrain`` end to end on a tiny store: outputs, exact resume, bad input, NaN stop."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cfcl import cli
from cfcl.config import build_config
from cfcl.contrastive import module as module_mod
from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.encoders import load_encoder
from cfcl.data.store import ImageStore, write_store
from cfcl.errors import ConfigError, StoreError
from cfcl.stage import read_manifest

SIZE = 16
N_TRAIN = 24
DOMAINS = ["a", "b", "c"]  # c is out-of-distribution


def _images(n, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def _data_store(path, size=SIZE, seed=0):
    n = N_TRAIN + 8
    split = ["train"] * N_TRAIN + ["val"] * 4 + ["ood_test"] * 4
    domain = [i % 2 for i in range(N_TRAIN + 4)] + [2] * 4
    meta = pd.DataFrame({
        "index": range(n), "image_id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
        "split": split, "domain": domain, "label": [i % 2 for i in range(n)],
    })
    return write_store(path, _images(n, size, seed), meta, DOMAINS, ["no", "yes"], extra={"ood_domains": [2], "synthetic": True})


def _cf_store(path, data, size=SIZE):
    pairs = [(i, d) for i in range(len(data)) for d in range(len(DOMAINS))]
    meta = pd.DataFrame({
        "index": range(len(pairs)), "source_index": [i for i, _ in pairs], "target_domain": [d for _, d in pairs],
        "split": [data.meta["split"][i] for i, _ in pairs], "domain": [d for _, d in pairs],
    })
    return write_store(path, _images(len(pairs), size, 7), meta, DOMAINS, ["no", "yes"], kind="counterfactuals",
                       extra={"source_store": data.content_hash})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    data = _data_store(root / "data")
    _cf_store(root / "data" / "true_cf", data)
    _cf_store(root / "cf", data)
    return root


def _config(stores, **overrides):
    values = {
        "data": str(stores / "data"), "batch_size": 4, "projection": [16, 8], "warmup_steps": 2,
        "encoder": {"arch": "small", "arch_kwargs": {"width": 4, "blocks": [1, 1]}},
        "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu", "log_every_n_steps": 1},
        **overrides,
    }
    return build_config(PretrainConfig, base=values)


@pytest.mark.parametrize("method", ["cf-simclr-multi", "oracle-multi"])
def test_multi_positive_methods_take_every_other_domain_by_default(stores, method):
    three = SimpleNamespace(targets=[0, 1, 2], data=SimpleNamespace(path="store"))
    assert pretrain.cf_views(_config(stores, method=method), three) == 2
    assert pretrain.cf_views(_config(stores, method=method, n_cf_views=2), three) == 2
    assert pretrain.cf_views(_config(stores, method="oracle"), three) == 1
    two = SimpleNamespace(targets=[0, 1], data=SimpleNamespace(path="store"))
    with pytest.raises(ConfigError, match=f"'{method}' needs n_cf_views >= 2"):
        pretrain.cf_views(_config(stores, method=method), two)


def test_cf_simclr_run_writes_encoder_curve_and_manifest(stores, tmp_path, monkeypatch):
    drawn = []

    class RecordedBatches(pretrain.ViewBatches):
        def __getitem__(self, key):
            drawn.append(super().__getitem__(key))
            return drawn[-1]

    monkeypatch.setattr(pretrain, "ViewBatches", RecordedBatches)
    manifest = pretrain.run(_config(stores, method="cf-simclr", cf_store=str(stores / "cf")), tmp_path)
    assert manifest["status"] == "complete" and manifest["steps"] == 2 * N_TRAIN // 4
    encoder, info = load_encoder(tmp_path)
    assert info["method"] == "cf-simclr" and info["image_size"] == [SIZE, SIZE] and info["feature_dim"] == 8
    assert encoder(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 8)
    assert (tmp_path / "loss_curve.png").stat().st_size > 0 and (tmp_path / "config.yaml").is_file()
    assert set(manifest["inputs"]) == {"data", "cf_store"}
    assert "probe/accuracy" in manifest["metrics"]
    # every step trained on training images, each paired with its counterfactual to the other ID domain
    data, cf = ImageStore.open(stores / "data"), ImageStore.open(stores / "cf")
    where = {image.tobytes(): (i, None) for i, image in enumerate(data.images)}
    where.update({image.tobytes(): (s, t) for image, s, t in zip(cf.images, cf.meta["source_index"], cf.meta["target_domain"])})
    domains, splits = data.meta["domain"].to_numpy(), data.meta["split"].to_numpy()
    assert len(drawn) == manifest["steps"]
    for item in drawn:
        views = [where[v.numpy().tobytes()] for v in item["views"][:, 0]]
        first, second = views[: len(views) // 2], views[len(views) // 2 :]
        assert all(t is None and splits[s] == "train" for s, t in first)
        assert [s for s, _ in second] == [s for s, _ in first]
        assert all(t is not None and t != 2 and t != domains[s] for s, t in second)


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, step):
    import lightning as L

    class Stop(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == step:
                raise Interrupted

    real = pretrain.make_trainer
    monkeypatch.setattr(pretrain, "make_trainer", lambda cfg, out, **kw: real(cfg, out, callbacks=[Stop()], **kw))


def _resume_config(stores):
    trainer = {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"}
    return _config(stores, method="oracle", batch_size=8, trainer=trainer)  # 3 steps per epoch


@pytest.fixture(scope="module")
def uninterrupted(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    pretrain.run(_resume_config(stores), out)
    return torch.load(out / "encoder.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("stop_step", [2, 3])  # mid-epoch, and at the end of the first epoch
def test_resume_after_interruption_continues_exactly(stores, uninterrupted, tmp_path, monkeypatch, stop_step):
    config = _resume_config(stores)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, stop_step)
        with pytest.raises(Interrupted):
            pretrain.run(config, tmp_path / "split")
    assert read_manifest(tmp_path / "split")["status"] == "running"
    manifest = pretrain.run(config, tmp_path / "split")
    assert manifest["resumed_from"].endswith("last.ckpt") and manifest["steps"] == 6
    split = torch.load(tmp_path / "split" / "encoder.pt", weights_only=True)["state_dict"]
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], split[key]), key


def test_cf_store_of_other_images_is_refused_before_training(stores, tmp_path):
    other = _data_store(tmp_path / "other", seed=1)
    _cf_store(tmp_path / "other_cf", other)
    with pytest.raises(StoreError, match="was made from store"):
        pretrain.run(_config(stores, method="cf-simclr", cf_store=str(tmp_path / "other_cf")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cf_store_of_other_resolution_is_refused(stores, tmp_path):
    data = _data_store(tmp_path / "data")
    _cf_store(tmp_path / "big_cf", data, size=SIZE * 2)
    config = _config(stores, method="cf-simclr", data=str(tmp_path / "data"), cf_store=str(tmp_path / "big_cf"))
    with pytest.raises(StoreError, match="32x32 images"):
        pretrain.run(config, tmp_path / "out")


def test_cf_method_without_cf_store_is_an_error(stores, tmp_path):
    with pytest.raises(ConfigError, match="needs a counterfactual store"):
        pretrain.run(_config(stores, method="cf-simclr"), tmp_path / "out")


def assert_last_checkpoint_is_good_at_step_2(out):
    """The run stopped at step 2 and ``last.ckpt`` holds the finite weights from before it."""
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(stores, tmp_path, monkeypatch):
    real = module_mod.nt_xent
    calls = []

    def poisoned(z, groups, temperature):
        calls.append(1)
        return real(z, groups, temperature) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(module_mod, "nt_xent", poisoned)
    with pytest.raises(module_mod.NonFiniteLossError, match="at step 2"):
        pretrain.run(_config(stores), tmp_path)
    assert_last_checkpoint_is_good_at_step_2(tmp_path)


def test_non_finite_gradient_with_a_finite_loss_stops_before_the_update(stores, tmp_path, monkeypatch):
    real = module_mod.nt_xent
    calls = []

    def poisoned(z, groups, temperature):
        calls.append(1)
        loss = real(z, groups, temperature)
        # Forward adds 0; backward gives 0 * inf = NaN on every projection (sqrt's slope at 0 is infinite).
        return loss + 0.0 * torch.sqrt(z.sum() * 0) if len(calls) == 3 else loss

    monkeypatch.setattr(module_mod, "nt_xent", poisoned)
    with pytest.raises(module_mod.NonFiniteLossError, match="gradients are not finite at step 2"):
        pretrain.run(_config(stores), tmp_path)
    assert_last_checkpoint_is_good_at_step_2(tmp_path)


def test_cli_pretrain_and_explicit_resume(stores, tmp_path, capsys):
    common = ["--set", "batch_size=4", "--set", "trainer.max_epochs=1", "--set", "trainer.progress_bar=false",
              "--set", "encoder.arch_kwargs={width: 4, blocks: [1]}", "--set", "projection=[8]"]
    code = cli.main(["pretrain", "--method", "simclr+", "--data", str(stores / "data"), "--cf-store",
                     str(stores / "cf"), "--out", str(tmp_path / "run"), *common])
    assert code == 0 and load_encoder(tmp_path / "run")[1]["method"] == "simclr+"
    code = cli.main(["pretrain", "--data", str(stores / "data"), "--out", str(tmp_path / "empty"), "--resume", *common])
    assert code == 2 and "no unfinished run" in capsys.readouterr().err
