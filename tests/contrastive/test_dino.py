"""ViT encoders and ``cfcl pretrain`` with the DINO methods on tiny stores: the teacher, schedules, resume, bad
input, and learning on easy data."""

import math
import warnings

import lightning as L
import pandas as pd
import pytest
import torch
from lightly.utils.scheduler import cosine_schedule
from torchvision.models.vision_transformer import VisionTransformer

from cfcl.api import embed
from cfcl.config import build_config, config_hash
from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.encoders import build_encoder, load_encoder, save_encoder
from cfcl.errors import CheckpointError, ConfigError
from cfcl.layout import TRAINER_LOG
from cfcl.stage import read_manifest
from support.benchmarks import load_benchmark
from support.pretrain import KEEP_EVERY_EPOCH, N_TRAIN, SIZE, TINY_VIT, Interrupted, dino_config, interrupt_after


def test_vit_encoder_features_tokens_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("vit", **TINY_VIT["arch_kwargs"]).eval()
    x = torch.rand(3, 1, SIZE, SIZE)
    assert encoder.feature_dim == 16 and encoder(x).shape == (3, 16)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[0, 5] = True
    tokens, masked = encoder.tokens(x), encoder.tokens(x, mask)
    assert tokens.shape == (3, 17, 16) and torch.allclose(tokens[:, 0], encoder(x))
    assert not torch.allclose(masked[0], tokens[0]) and torch.allclose(masked[1:], tokens[1:])
    assert encoder(torch.rand(2, 1, 8, 8)).shape == (2, 16)  # positions resampled for smaller (local) crops
    assert encoder(torch.rand(2, 1, 16, 12)).shape == (2, 16)  # and for non-square images
    save_encoder(tmp_path, encoder, {"image_size": [SIZE, SIZE], "method": "dino", "seed": 0})
    loaded, info = load_encoder(tmp_path)
    assert info["arch"] == "vit" and info["feature_dim"] == 16 and torch.allclose(loaded(x), encoder(x))


def test_block_masks_are_seeded_rectangles_covering_the_share_asked_for():
    import random

    from cfcl.contrastive.dino_module import block_masks

    random.seed(7)
    before = random.getstate()
    masks = block_masks(8, (8, 8), (0.1, 0.5), 0.5, seed=3)
    assert random.getstate() == before  # the caller's random state is untouched
    assert torch.equal(masks, block_masks(8, (8, 8), (0.1, 0.5), 0.5, seed=3))
    assert not torch.equal(masks, block_masks(8, (8, 8), (0.1, 0.5), 0.5, seed=4))
    counts = masks.sum(dim=1)
    assert masks.shape == (8, 64) and int((counts > 0).sum()) == 4  # half the views masked
    assert counts.max() <= 0.5 * 64
    from scipy.ndimage import label

    pieces = sum(label(grid.numpy())[1] for grid in masks.view(8, 8, 8))
    assert pieces <= int(counts.sum()) / 3  # contiguous blocks, not scattered patches


def test_vit_presets_have_the_reference_widths():
    assert build_encoder("vit_s16", image_size=32).feature_dim == 384
    with pytest.raises(ConfigError, match="'vit_b16' takes \\['image_size'\\], got \\['depth'\\]"):
        build_encoder("vit_b16", depth=2)


def test_imagenet_vit_weights_file_sums_rgb_patch_filters_and_resamples_positions(tmp_path):
    torch.manual_seed(0)
    reference = VisionTransformer(32, 4, 1, 2, 16, 32)
    path = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), path)
    encoder = build_encoder(
        "vit", pretrained_weights=path, **TINY_VIT["arch_kwargs"]
    ).eval()  # 16 px: 4x4 positions, not 8x8
    vit = encoder.backbone.vit.vit
    assert torch.allclose(vit.conv_proj.weight, reference.conv_proj.weight.sum(1, keepdim=True))
    assert torch.equal(vit.encoder.layers[0].mlp[0].weight, reference.encoder.layers[0].mlp[0].weight)
    assert vit.encoder.pos_embedding.shape == (1, 17, 16)
    assert torch.equal(vit.encoder.pos_embedding[:, 0], reference.encoder.pos_embedding[:, 0])
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a torchvision ViT state_dict"):
        build_encoder("vit", pretrained_weights=path, **TINY_VIT["arch_kwargs"])


class Recorder(L.Callback):
    """Teacher and student before and after every step, and the teacher temperature used."""

    def __init__(self):
        self.steps = []

    @staticmethod
    def _copy(module):
        return [p.detach().clone() for p in module.parameters()]

    def on_train_batch_start(self, trainer, module, *args):
        self.before = self._copy(module.teacher_encoder) + self._copy(module.teacher_head)

    def on_train_batch_end(self, trainer, module, *args):
        teacher = list(module.teacher_encoder.parameters()) + list(module.teacher_head.parameters())
        student = self._copy(module.encoder) + self._copy(module.head)
        assert all(p.grad is None and not p.requires_grad for p in teacher)
        self.steps.append((self.before, [p.detach().clone() for p in teacher], student))


def test_teacher_moves_only_by_the_scheduled_ema_of_the_student(stores, tmp_path, monkeypatch):
    recorder = Recorder()
    real = pretrain.make_trainer
    monkeypatch.setattr(pretrain, "make_trainer", lambda cfg, out, **kw: real(cfg, out, callbacks=[recorder], **kw))
    config = dino_config(stores, method="dino", cf_store=None)
    manifest = pretrain.run(config, tmp_path)
    total = manifest["steps"]
    assert total == 2 * N_TRAIN // 4 and len(recorder.steps) == total
    for step, (before, after, student) in enumerate(recorder.steps):
        m = cosine_schedule(step, total, 0.995, 1.0)
        for b, a, s in zip(before, after, student):
            assert torch.allclose(a, m * b + (1 - m) * s, atol=1e-6), step
    # the saved encoder is the teacher
    saved = torch.load(tmp_path / "encoder.pt", weights_only=True)["state_dict"]
    teacher_weights = recorder.steps[-1][1][: len(saved)]
    assert all(torch.equal(w, t) for w, t in zip(saved.values(), teacher_weights))


class PrototypeRecorder(L.Callback):
    """Whether the student head's prototypes (last layer) and its MLP moved in each step."""

    def __init__(self):
        self.moved = []

    def on_train_batch_start(self, trainer, module, *args):
        self.before = [p.detach().clone() for p in (module.head.last_layer.weight_v, module.head.layers[0].weight)]

    def on_train_batch_end(self, trainer, module, *args):
        after = (module.head.last_layer.weight_v, module.head.layers[0].weight)
        self.moved.append(tuple(not torch.equal(b, a) for b, a in zip(self.before, after)))


def test_prototypes_are_frozen_for_the_first_epoch_only(stores, tmp_path, monkeypatch):
    recorder = PrototypeRecorder()
    real = pretrain.make_trainer
    monkeypatch.setattr(pretrain, "make_trainer", lambda cfg, out, **kw: real(cfg, out, callbacks=[recorder], **kw))
    pretrain.run(dino_config(stores, method="dino", cf_store=None), tmp_path)  # 2 epochs, prototypes frozen for 1
    per_epoch = N_TRAIN // 4
    assert len(recorder.moved) == 2 * per_epoch
    assert recorder.moved[:per_epoch] == [(False, True)] * per_epoch  # the MLP learns, the prototypes wait
    assert recorder.moved[per_epoch:] == [(True, True)] * per_epoch


def test_teacher_temperature_and_weight_decay_follow_their_schedules(stores):
    config = dino_config(stores)
    config = config.model_copy(update={"dino": config.dino.model_copy(update={"teacher_temp": (0.04, 0.07)})})
    module = pretrain.build_dino_module(config, pretrain.open_pretrain_data("dino", stores / "data", None), 6)
    assert [module.teacher_temperature(s) for s in (0, 3, 6, 9)] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert module.global_augment.size == (SIZE, SIZE) and module.local_augment.size == (8, 8)


def test_head_batch_norm_reaches_student_and_teacher_heads_alike(stores):
    data = pretrain.open_pretrain_data("dino", stores / "data", None)
    dino = dino_config(stores).dino.model_dump()
    plain = pretrain.build_dino_module(dino_config(stores, dino={**dino, "head_batch_norm": False}), data, 6)
    with_bn = pretrain.build_dino_module(dino_config(stores, dino={**dino, "head_batch_norm": True}), data, 6)

    def norms(head):
        return sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())

    assert norms(plain.head) == norms(plain.teacher_head) == 0
    assert norms(with_bn.head) == norms(with_bn.teacher_head) == 2  # after each hidden layer of the MLP
    assert all(
        torch.equal(a, b)
        for a, b in zip(with_bn.head.state_dict().values(), with_bn.teacher_head.state_dict().values())
    )


def _resume_config(stores):
    return dino_config(stores, method="oracle-dino", cf_store=None, batch_size=8)  # 3 steps per epoch


class FinalState(L.Callback):
    def on_train_end(self, trainer, module):
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}


def _run_recording_final_state(monkeypatch, config, out):
    final = FinalState()
    real = pretrain.make_trainer
    with monkeypatch.context() as patch:
        patch.setattr(
            pretrain,
            "make_trainer",
            lambda cfg, o, callbacks=(), **kw: real(cfg, o, callbacks=[*callbacks, final], **kw),
        )
        manifest = pretrain.run(config, out)
    return manifest, final.state


def test_resume_continues_exactly_teacher_and_centres_included(stores, tmp_path, monkeypatch):
    config = _resume_config(stores)
    _, whole = _run_recording_final_state(monkeypatch, config, tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            pretrain.run(config, tmp_path / "split")
    assert read_manifest(tmp_path / "split")["status"] == "running"
    manifest, split = _run_recording_final_state(monkeypatch, config, tmp_path / "split")
    assert manifest["resumed_from"].endswith("last.ckpt") and manifest["steps"] == 6
    assert {"center", "patch_center"} <= set(split) and any(k.startswith("teacher_encoder.") for k in split)
    assert whole["center"].abs().sum() > 0 and whole["patch_center"].abs().sum() > 0
    for key in whole:
        assert torch.equal(whole[key], split[key]), key


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"dino": {"local_size": SIZE * 2}},
            "dino.local_size 32 is larger than the global crops \\(16x16, dino.global_size\\)",
        ),
        ({"cf_store": None}, "method 'cf-dino' needs a counterfactual store"),
    ],
)
def test_bad_dino_input_is_refused_before_training(stores, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        pretrain.run(dino_config(stores, **overrides), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"encoder": {"arch": "vit", "arch_kwargs": {"image_size": 30, "patch_size": 8}}},
            "encoder.arch_kwargs.image_size 30 is not a multiple of patch_size 8",
        ),
        ({"dino": {"local_size": 32, "global_size": 16}}, "dino.local_size 32 is larger than dino.global_size 16"),
        ({"encoder": {"arch": "small"}}, "dino.ibot_weight needs a ViT encoder"),
    ],
)
def test_bad_dino_config_is_a_one_line_error_naming_the_key(stores, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        dino_config(stores, **overrides)
    assert "\n" not in str(error.value)


def test_dino_settings_are_dropped_for_the_simclr_family_so_they_cannot_change_its_config_hash(stores):
    simclr = dino_config(stores, method="simclr", cf_store=None, encoder={"arch": "small"})
    assert simclr.dino is None
    assert config_hash(
        dino_config(stores, method="simclr", cf_store=None, encoder={"arch": "small"}, dino={"n_local": 8})
    ) == config_hash(simclr)
    assert dino_config(stores, method="dino", cf_store=None, dino={}).dino.n_local == 4


def test_dino_skips_non_finite_steps_on_the_device_and_stops_after_an_epoch_of_them(stores, tmp_path, monkeypatch):
    from cfcl.contrastive import dino_module
    from cfcl.contrastive.module import NonFiniteLossError

    real = dino_module.dino_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss + 0.0 * torch.sqrt(loss * 0) if len(calls) > N_TRAIN // 4 else loss  # NaN gradients from epoch 1

    monkeypatch.setattr(dino_module, "dino_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=rf"skipped {N_TRAIN // 4} of {N_TRAIN // 4} updates of epoch 1"):
        pretrain.run(
            dino_config(
                stores,
                method="dino",
                cf_store=None,
                trainer=KEEP_EVERY_EPOCH,
            ),
            tmp_path,
        )
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    epoch0 = torch.load(tmp_path / "checkpoints" / "epoch000.ckpt", weights_only=True)["state_dict"]
    for key, value in epoch0.items():  # the student took no update in epoch 1 (the teacher's EMA still moved)
        if (
            key.startswith(("encoder.", "head.")) and "running_" not in key and "num_batches" not in key
        ):  # BatchNorm statistics are no update
            assert torch.equal(last[key], value), key


class FinalOptimizer(L.Callback):
    def on_train_end(self, trainer, module):
        self.optimizer, self.module = trainer.optimizers[0], module


def test_dino_weight_decay_is_decoupled_under_either_optimizer_name_and_spares_the_probe(stores, tmp_path, monkeypatch):
    final = FinalOptimizer()
    real = pretrain.make_trainer
    monkeypatch.setattr(pretrain, "make_trainer", lambda cfg, out, **kw: real(cfg, out, callbacks=[final], **kw))
    trainer = {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"}
    pretrain.run(dino_config(stores, method="dino", cf_store=None, optimizer="adam", trainer=trainer), tmp_path)
    optimizer, module = final.optimizer, final.module
    # coupled L2 through Adam is divided by the small gradients of self-distillation and shrinks the weights
    assert type(optimizer) is torch.optim.AdamW
    decayed = {id(p) for group in optimizer.param_groups if group["decayed"] for p in group["params"]}
    assert all(group["weight_decay"] > 0 for group in optimizer.param_groups if group["decayed"])
    assert all(group["weight_decay"] == 0 for group in optimizer.param_groups if not group["decayed"])
    assert {id(p) for p in module.encoder.parameters() if p.ndim > 1} <= decayed
    assert not decayed & {id(p) for p in module.probe.parameters()}  # the probe monitors; decay would hold it at chance


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared CPU, tiny convolutions on two threads spend most of their time waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_dino_learns_grossly_different_textures_beyond_the_random_encoder(tmp_path, one_thread):
    """A self-distillation step that stops learning fails here: on benchmarks/dino_easy.py's ten
    textures (16 px) the teacher's targets leave the uniform distribution and its frozen features
    beat the random encoder's under cfcl's probe at 10 % of the labels. The shipped DINO settings,
    with a small batch and a faster teacher for a run of 150 steps."""
    easy = load_benchmark("dino_easy")
    store = easy.make_store(tmp_path / "data", per_class=48, size=16)
    encoder = {"arch": "small", "arch_kwargs": {"width": 8, "blocks": [1, 1], "stem_stride": 1}}
    dino = {
        "prototypes": 64,
        "head_hidden": 64,
        "head_bottleneck": 16,
        "n_local": 0,
        "local_size": 8,
        "teacher_momentum": [0.95, 1.0],
    }
    config = build_config(
        PretrainConfig,
        base={
            "method": "dino",
            "data": str(store.path),
            "batch_size": 32,
            "encoder": encoder,
            "dino": dino,
            "trainer": {"max_epochs": 10, "progress_bar": False, "accelerator": "cpu", "log_every_n_steps": 1},
        },
    )
    pretrain.run(config, tmp_path / "dino")
    logged = pd.read_csv(tmp_path / "dino" / TRAINER_LOG).groupby("epoch").mean()
    losses = logged["train/dino_epoch"]
    assert losses.iloc[-1] < math.log(64) - 1.0 < losses.iloc[0] - 1.0
    # sharp targets (one image's entropy 1.6 of log 64 = 4.16 nats) spread over prototypes (their mean's 3.1)
    last = logged.iloc[-1]
    assert last["train/teacher_entropy"] < math.log(64) - 2.0 and last["train/teacher_mean_entropy"] > 1.5
    trained = easy.probe_accuracy(embed(load_encoder(tmp_path / "dino")[0], store), store, 0.1, 0)
    random = easy.probe_accuracy(embed(easy.random_encoder(config), store), store, 0.1, 0)
    # 0.58 against 0.47; the teacher with the student's BatchNorm statistics: 0.44
    assert trained > random + 0.05, (trained, random)


def test_building_the_dino_head_prints_no_dependency_deprecation(stores):
    """lightly's head warns that torch's weight_norm is deprecated; cfcl builds it without the warning, and the
    filter does not outlive the build."""
    from cfcl.contrastive.dino_module import projection_head

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head = projection_head(16, dino_config(stores).dino)
        warnings.warn("`torch.nn.utils.weight_norm` is deprecated (a later one)", FutureWarning, stacklevel=1)
    assert head.last_layer.weight.shape[0] == dino_config(stores).dino.prototypes
    assert [str(w.message) for w in caught] == ["`torch.nn.utils.weight_norm` is deprecated (a later one)"]
