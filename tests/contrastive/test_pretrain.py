"""``cfcl pretrain`` end to end on a tiny store: outputs, exact resume, bad input, NaN stop."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from cfcl import cli
from cfcl.contrastive import module as module_mod
from cfcl.contrastive import pretrain
from cfcl.contrastive.encoders import load_encoder
from cfcl.data.store import ImageStore
from cfcl.errors import ConfigError, StoreError
from cfcl.stage import read_manifest
from support.cf_stores import make_store
from support.pretrain import (
    KEEP_EVERY_EPOCH,
    N_TRAIN,
    SIZE,
    TRAINER,
    Interrupted,
    interrupt_after,
    noise_cf_store,
    noise_store,
    pretrain_config,
)


@pytest.mark.parametrize("method", ["cf-simclr-multi", "oracle-multi", "simclr-multi"])
def test_multi_positive_methods_take_every_other_domain_by_default(stores, method):
    three = SimpleNamespace(targets=[0, 1, 2], data=SimpleNamespace(path="store"))
    assert pretrain.cf_views(pretrain_config(stores, method=method), three) == 2
    assert pretrain.cf_views(pretrain_config(stores, method=method, n_cf_views=2), three) == 2
    assert pretrain.cf_views(pretrain_config(stores, method="oracle"), three) == 1
    two = SimpleNamespace(targets=[0, 1], data=SimpleNamespace(path="store"))
    with pytest.raises(ConfigError, match=f"'{method}' needs n_cf_views >= 2"):
        pretrain.cf_views(pretrain_config(stores, method=method), two)


def test_simclr_multi_trains_on_three_independently_augmented_views_of_each_image_without_a_cf_store(
    tmp_path, monkeypatch
):
    data = make_store(tmp_path / "data", n_per_domain=(8, 8, 8), n_ood=2, true_cf=False)  # 3 ID scanners
    drawn, losses, augmented = [], [], []

    class RecordedBatches(pretrain.ViewBatches):
        def __getitem__(self, key):
            drawn.append(super().__getitem__(key))
            return drawn[-1]

    real_loss, real_augmented = module_mod.nt_xent, module_mod.ContrastiveModule._augmented

    def recorded_loss(z, groups, temperature):
        losses.append((groups.clone(), real_loss(z, groups, temperature)))
        return losses[-1][1]

    def recorded_augmented(self, views):
        augmented.append(real_augmented(self, views))
        return augmented[-1]

    monkeypatch.setattr(pretrain, "ViewBatches", RecordedBatches)
    monkeypatch.setattr(module_mod, "nt_xent", recorded_loss)
    monkeypatch.setattr(module_mod.ContrastiveModule, "_augmented", recorded_augmented)
    config = pretrain_config(tmp_path, method="simclr-multi", data=str(data.path), trainer={**TRAINER, "max_epochs": 1})
    assert config.cf_store is None
    manifest = pretrain.run(config, tmp_path / "out")
    assert manifest["status"] == "complete" and set(manifest["inputs"]) == {"data"}
    train = set(data.indices("train").tolist())
    where = {image.tobytes(): i for i, image in enumerate(data.images)}
    assert len(drawn) == len(losses) == len(augmented) == manifest["steps"] == len(train) // 4
    for item, (groups, loss), views in zip(drawn, losses, augmented):
        sources = [where[v.numpy().tobytes()] for v in item["views"][:, 0]]
        assert len(sources) == 3 * 4 and set(sources) <= train  # as many views as cf-simclr-multi: 1 + 2 domains
        assert sources == sources[:4] * 3  # every view of the image itself
        assert groups.tolist() == item["groups"].tolist() == list(range(4)) * 3  # mutual positives
        assert torch.isfinite(loss)
        copies = views.reshape(3, 4, -1)
        for a, b in ((0, 1), (0, 2), (1, 2)):  # the same image augmented apart in each of its views
            assert ((copies[a] - copies[b]).abs().amax(dim=1) > 0).all()


def test_cf_simclr_run_writes_encoder_curve_and_manifest(stores, tmp_path, monkeypatch):
    drawn = []

    class RecordedBatches(pretrain.ViewBatches):
        def __getitem__(self, key):
            drawn.append(super().__getitem__(key))
            return drawn[-1]

    monkeypatch.setattr(pretrain, "ViewBatches", RecordedBatches)
    manifest = pretrain.run(pretrain_config(stores, method="cf-simclr", cf_store=str(stores / "cf")), tmp_path)
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
    where.update(
        {image.tobytes(): (s, t) for image, s, t in zip(cf.images, cf.meta["source_index"], cf.meta["target_domain"])}
    )
    domains, splits = data.meta["domain"].to_numpy(), data.meta["split"].to_numpy()
    assert len(drawn) == manifest["steps"]
    for item in drawn:
        views = [where[v.numpy().tobytes()] for v in item["views"][:, 0]]
        first, second = views[: len(views) // 2], views[len(views) // 2 :]
        assert all(t is None and splits[s] == "train" for s, t in first)
        assert [s for s, _ in second] == [s for s, _ in first]
        assert all(t is not None and t != 2 and t != domains[s] for s, t in second)


def _resume_config(stores):
    trainer = {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu"}
    return pretrain_config(stores, method="oracle", batch_size=8, trainer=trainer)  # 3 steps per epoch


@pytest.fixture(scope="module")
def uninterrupted(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    pretrain.run(_resume_config(stores), out)
    return torch.load(out / "encoder.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("stop_step", [2, 3])  # mid-epoch, and at the end of the first epoch
def test_resume_after_interruption_continues_exactly(stores, uninterrupted, tmp_path, monkeypatch, stop_step):
    config = _resume_config(stores)
    with monkeypatch.context() as patch:
        interrupt_after(patch, stop_step)
        with pytest.raises(Interrupted):
            pretrain.run(config, tmp_path / "split")
    assert read_manifest(tmp_path / "split")["status"] == "running"
    manifest = pretrain.run(config, tmp_path / "split")
    assert manifest["resumed_from"].endswith("last.ckpt") and manifest["steps"] == 6
    split = torch.load(tmp_path / "split" / "encoder.pt", weights_only=True)["state_dict"]
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], split[key]), key


def test_cf_store_of_other_images_is_refused_before_training(stores, tmp_path):
    other = noise_store(tmp_path / "other", seed=1)
    noise_cf_store(tmp_path / "other_cf", other)
    with pytest.raises(StoreError, match="was made from store"):
        pretrain.run(pretrain_config(stores, method="cf-simclr", cf_store=str(tmp_path / "other_cf")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cf_store_of_other_resolution_is_refused(stores, tmp_path):
    data = noise_store(tmp_path / "data")
    noise_cf_store(tmp_path / "big_cf", data, size=SIZE * 2)
    config = pretrain_config(stores, method="cf-simclr", data=str(tmp_path / "data"), cf_store=str(tmp_path / "big_cf"))
    with pytest.raises(StoreError, match="32x32 images"):
        pretrain.run(config, tmp_path / "out")


def test_cf_method_without_cf_store_is_an_error(stores, tmp_path):
    with pytest.raises(ConfigError, match="needs a counterfactual store"):
        pretrain.run(pretrain_config(stores, method="cf-simclr"), tmp_path / "out")


def _nan_gradient(loss, z):
    """The loss unchanged forward; backward gives 0 * inf = NaN on every projection (sqrt's slope at 0 is infinite)."""
    return loss + 0.0 * torch.sqrt(z.sum() * 0)


def _poison(monkeypatch, calls_to_poison):
    real = module_mod.nt_xent
    calls = []

    def poisoned(z, groups, temperature):
        calls.append(1)
        loss = real(z, groups, temperature)
        return _nan_gradient(loss, z) if calls_to_poison(len(calls)) else loss

    monkeypatch.setattr(module_mod, "nt_xent", poisoned)


def test_the_non_finite_check_flags_any_nan_or_infinity_in_any_gradient():
    rng = torch.Generator().manual_seed(0)
    for case in range(40):
        params = [
            torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
            for shape, dtype in [
                ((3, 4), torch.float32),
                ((5,), torch.float32),
                ((2, 2), torch.bfloat16),
                ((7,), torch.float64),
            ]
        ]
        for p in params[: 3 + case % 2]:  # the last one sometimes has no gradient
            p.grad = torch.randn(p.shape, generator=rng).to(p.dtype) * 1e30
            if torch.rand((), generator=rng) < 0.15:
                p.grad.view(-1)[torch.randint(p.numel(), (), generator=rng)] = [
                    float("nan"),
                    float("inf"),
                    -float("inf"),
                ][case % 3]
        before = [p.grad.clone() if p.grad is not None else None for p in params]
        expected = any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params)
        found = module_mod.non_finite_gradients(params, torch.device("cpu"))
        assert found.dtype == torch.float32 and found.shape == () and float(found) == float(expected), case
        for p, b in zip(params, before):  # the gradients are left as they were
            assert (p.grad is None) == (b is None)
            if b is not None:
                torch.testing.assert_close(p.grad, b, rtol=0, atol=0, equal_nan=True)
    assert float(module_mod.non_finite_gradients([torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))) == 0.0


def test_a_non_finite_step_is_skipped_weights_and_adam_state_unchanged_and_training_continues(
    stores, tmp_path, monkeypatch
):
    import lightning as L

    _poison(monkeypatch, lambda call: call == 3)  # the third step, global step 2
    seen = {}

    class Watch(L.Callback):
        def _snapshot(self, trainer, module):
            optimizer = trainer.optimizers[0]
            state = {
                f"{i}.{k}": v.clone() for i, p in enumerate(module.parameters()) for k, v in optimizer.state[p].items()
            }
            return {
                k: v.detach().clone() for k, v in module.named_parameters()
            }, state  # BatchNorm statistics move in forward

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 2:
                seen["before"] = self._snapshot(trainer, module)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step in (3, 4):
                seen[trainer.global_step] = self._snapshot(trainer, module)

    real = pretrain.make_trainer
    monkeypatch.setattr(pretrain, "make_trainer", lambda cfg, out, **kw: real(cfg, out, callbacks=[Watch()], **kw))
    manifest = pretrain.run(pretrain_config(stores), tmp_path)
    assert manifest["status"] == "complete" and manifest["steps"] == 2 * N_TRAIN // 4
    (weights, adam), (after_weights, after_adam) = seen["before"], seen[3]
    assert adam and adam.keys() == after_adam.keys()
    for key in weights:
        assert torch.equal(weights[key], after_weights[key]), key
    for key in adam:
        assert torch.equal(adam[key], after_adam[key]), key  # exp_avg, exp_avg_sq and the step count
    assert any(not torch.equal(after_weights[k], seen[4][0][k]) for k in weights)  # the next step updates again
    metrics = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    assert metrics["train/skipped_updates"].dropna().tolist() == [1.0, 0.0]
    assert manifest["metrics"]["train/skipped_updates"] == 0.0


def test_an_epoch_of_non_finite_steps_stops_and_keeps_the_last_good_checkpoint(stores, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda call: call >= 7)  # every step of the second epoch (6 steps per epoch)
    with pytest.raises(module_mod.NonFiniteLossError, match=r"skipped 6 of 6 updates of epoch 1 .*stopped at step 12"):
        pretrain.run(
            pretrain_config(
                stores,
                trainer=KEEP_EVERY_EPOCH,
            ),
            tmp_path,
        )
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    epoch0 = torch.load(tmp_path / "checkpoints" / "epoch000.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 12 and epoch0["global_step"] == 6
    for key, value in epoch0["state_dict"].items():  # no update of the second epoch was applied
        if "running" not in key and "num_batches" not in key:  # BatchNorm statistics move in forward
            assert torch.equal(checkpoint["state_dict"][key], value), key
    assert not (tmp_path / "checkpoints" / "epoch001.ckpt").exists()


def test_a_lower_skip_fraction_stops_on_fewer_skipped_steps(stores, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda call: call in (2, 4, 6))
    with pytest.raises(
        module_mod.NonFiniteLossError,
        match=r"skipped 3 of 6 updates of epoch 0 for non-finite gradients \(stop_skipped_fraction=0.5\)",
    ):
        pretrain.run(pretrain_config(stores, stop_skipped_fraction=0.5), tmp_path)


def test_compile_compiles_the_encoder_in_place_keeping_its_state_dict_keys(stores):
    plain = pretrain.build_module(pretrain_config(stores), (SIZE, SIZE), 2).encoder
    compiled = pretrain.build_module(pretrain_config(stores, compile=True), (SIZE, SIZE), 2).encoder
    assert plain._compiled_call_impl is None and compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_cli_pretrain_and_explicit_resume(stores, tmp_path, capsys):
    common = [
        "--set",
        "batch_size=4",
        "--set",
        "trainer.max_epochs=1",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        "encoder.arch_kwargs={width: 4, blocks: [1]}",
        "--set",
        "projection=[8]",
    ]
    code = cli.main(
        [
            "pretrain",
            "--method",
            "simclr+",
            "--data",
            str(stores / "data"),
            "--cf-store",
            str(stores / "cf"),
            "--out",
            str(tmp_path / "run"),
            *common,
        ]
    )
    assert code == 0 and load_encoder(tmp_path / "run")[1]["method"] == "simclr+"
    code = cli.main(["pretrain", "--data", str(stores / "data"), "--out", str(tmp_path / "empty"), "--resume", *common])
    assert code == 2 and "no unfinished run" in capsys.readouterr().err


def test_cli_pretrain_of_an_oracle_control_reads_its_store(stores, tmp_path, capsys):
    common = [
        "--data",
        str(stores / "data"),
        "--set",
        "batch_size=4",
        "--set",
        "trainer.max_epochs=1",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        "encoder.arch_kwargs={width: 4, blocks: [1]}",
        "--set",
        "projection=[8]",
    ]
    assert cli.main(["pretrain", "--method", "oracle-renoised", "--out", str(tmp_path / "renoised"), *common]) == 0
    assert load_encoder(tmp_path / "renoised")[1]["method"] == "oracle-renoised"
    assert read_manifest(tmp_path / "renoised")["inputs"]["cf_store"]["path"].endswith("true_cf_renoised")
    assert cli.main(["pretrain", "--method", "oracle-recon", "--out", str(tmp_path / "recon"), *common]) == 2
    assert "needs a counterfactual store" in capsys.readouterr().err
