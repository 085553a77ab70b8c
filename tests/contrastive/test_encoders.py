"""Encoders (torchvision, ViT, timm): shapes, input normalisation, pretrained weights, save/load round trip,
pretraining with timm."""

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from cfcl.config import build_config
from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.encoders import build_encoder, load_encoder, save_encoder
from cfcl.contrastive.timm_encoders import with_image_size
from cfcl.data.store import ImageStore
from cfcl.errors import CheckpointError, ConfigError
from cfcl.evaluation.features import extract_features
from cfcl.presets import resolve_config_path
from support.pretrain import SIZE, pretrain_config


@pytest.mark.parametrize(
    "arch, kwargs, dim",
    [("small", {"width": 4, "blocks": [1, 1]}, 8), ("small", {"width": 8}, 64), ("resnet18", {}, 512)],
)
def test_encoder_maps_images_to_features(arch, kwargs, dim):
    torch.manual_seed(0)
    encoder = build_encoder(arch, **kwargs).eval()
    features = encoder(torch.rand(3, 1, 32, 32))
    assert encoder.feature_dim == dim
    assert features.shape == (3, dim) and torch.isfinite(features).all()


def test_encoder_normalises_inputs_inside():
    encoder = build_encoder("small", width=4).eval()
    x = torch.rand(2, 1, 16, 16)
    expected = encoder.backbone((x - 0.5) / 0.25)
    assert torch.allclose(encoder(x), expected)


def test_imagenet_weights_file_initialises_resnet_with_summed_rgb_filters(tmp_path):
    torch.manual_seed(0)
    reference = resnet18(weights=None)
    path = tmp_path / "imagenet.pth"
    torch.save(reference.state_dict(), path)
    encoder = build_encoder("resnet18", pretrained_weights=path)
    assert torch.allclose(encoder.backbone.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(encoder.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    # the 1-channel network on a grey image equals the RGB network on that image repeated 3 times
    encoder.eval(), reference.eval()
    reference.fc = torch.nn.Identity()
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(encoder(x), reference(((x - 0.5) / 0.25).expand(-1, 3, -1, -1)), atol=1e-5)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit"):
        build_encoder("resnet34", pretrained_weights=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_encoder("resnet18", pretrained_weights=tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="unknown encoder"):
        build_encoder("vgg16")


def test_save_load_round_trip_in_folder_and_file(tmp_path):
    torch.manual_seed(1)
    encoder = build_encoder("small", width=4, blocks=[1, 2])
    encoder.train()(torch.rand(4, 1, 16, 16))  # moves BatchNorm running stats away from their init
    save_encoder(tmp_path, encoder, {"image_size": [16, 16], "method": "simclr", "seed": 3})
    loaded, info = load_encoder(tmp_path)
    assert not loaded.training
    assert info == {
        "arch": "small",
        "arch_kwargs": {"width": 4, "blocks": [1, 2]},
        "feature_dim": 8,
        "image_size": [16, 16],
        "in_channels": 1,
        "method": "simclr",
        "seed": 3,
    }
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded(x), encoder.eval()(x))
    assert load_encoder(tmp_path / "encoder.pt")[1] == info


def test_corrupt_or_mismatched_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "encoder.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_encoder(path)
    encoder = build_encoder("small", width=4)
    save_encoder(path, encoder, {"image_size": [16, 16], "method": "simclr", "seed": 0})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["arch_kwargs"] = {"width": 8}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        load_encoder(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "nothing")


# timm encoders: tiny models, 1 channel, features for any image size, weights, config validation.
TIMM_VIT = ("timm/vit_tiny_patch16_224", {"img_size": 32})


@pytest.mark.parametrize("arch, kwargs, dim", [("timm/resnet10t", {}, 512), (*TIMM_VIT, 192)])
def test_timm_encoder_takes_one_channel_any_size_and_gives_num_features(arch, kwargs, dim):
    torch.manual_seed(0)
    encoder = build_encoder(arch, **kwargs).eval()
    assert encoder.feature_dim == dim == encoder.backbone.num_features
    for size in [(32, 32), (40, 52)]:  # not whole patches: a ViT pads
        features = encoder(torch.rand(2, 1, *size))
        assert features.shape == (2, dim) and torch.isfinite(features).all()
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(encoder(x), encoder.backbone((x - 0.5) / 0.25))


def test_timm_encoder_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder(TIMM_VIT[0], **TIMM_VIT[1])
    save_encoder(tmp_path, encoder, {"image_size": [32, 32], "method": "simclr", "seed": 0})
    loaded, info = load_encoder(tmp_path)
    assert (
        info["arch"] == "timm/vit_tiny_patch16_224"
        and info["arch_kwargs"] == {"img_size": 32}
        and info["feature_dim"] == 192
    )
    x = torch.rand(2, 1, 32, 48)
    assert torch.equal(loaded(x), encoder.eval()(x))


def test_timm_weights_from_a_local_file_rgb_filters_summed(tmp_path):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("resnet10t", pretrained=False)  # 3 channels, 1000 classes
    path = tmp_path / "resnet10t.pth"
    torch.save(reference.state_dict(), path)
    encoder = build_encoder("timm/resnet10t", pretrained_weights=path)
    assert torch.allclose(encoder.backbone.conv1[0].weight, reference.conv1[0].weight.sum(1, keepdim=True))
    assert torch.equal(encoder.backbone.layer4[0].conv2.weight, reference.layer4[0].conv2.weight)
    one_channel = tmp_path / "one_channel.pth"
    torch.save(encoder.backbone.state_dict(), one_channel)
    again = build_encoder("timm/resnet10t", pretrained_weights=one_channel)
    assert torch.equal(again.backbone.conv1[0].weight, encoder.backbone.conv1[0].weight)


def test_timm_weights_that_do_not_fit_name_the_key(tmp_path):
    import timm

    path = tmp_path / "vit_small.pth"
    torch.save(timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32).state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"file .*vit_small.pth does not fit encoder timm/vit_tiny_patch16_224: size mismatch for cls_token",
    ) as err:
        build_encoder(TIMM_VIT[0], pretrained_weights=path, **TIMM_VIT[1])
    assert "\n" not in str(err.value)
    path = tmp_path / "resnet.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"file .*resnet.pth does not fit encoder timm/resnet10t: size mismatch for layer2"
    ):
        build_encoder("timm/resnet10t", pretrained_weights=path)
    state = timm.create_model("resnet10t", pretrained=False).state_dict()
    del state["layer4.0.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(
        CheckpointError,
        match=r"file .*resnet.pth does not fit encoder timm/resnet10t: it has no layer4\.0\.conv2\.weight",
    ):
        build_encoder("timm/resnet10t", pretrained_weights=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_encoder("timm/resnet10t", pretrained_weights=tmp_path / "missing.pth")


def test_resnet_weights_that_do_not_fit_name_the_key(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit this architecture: (Missing|Unexpected) key\(s\) .*layer"):
        build_encoder("resnet34", pretrained_weights=path)


def test_named_weights_without_network_or_cache_are_one_line_errors(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for arch, weights, expected in [
        (
            "resnet18",
            "IMAGENET1K_V1",
            r"pretrained weights IMAGENET1K_V1 of torchvision resnet18: cannot fetch https://\S+resnet18",
        ),
        (
            "timm/resnet10t",
            "hf-hub:cfcl-test/absent",
            r"pretrained weights hf-hub:cfcl-test/absent for encoder timm/resnet10t: timm could not load",
        ),
        ("timm/resnet10t", "c3_in1k", r"pretrained weights c3_in1k for encoder timm/resnet10t: timm could not load"),
    ]:
        if arch == "resnet18":  # torchvision downloads by urllib: fail at once instead of asking the network
            monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
        with pytest.raises(CheckpointError, match=expected) as err:
            build_encoder(arch, pretrained_weights=weights)
        assert "\n" not in str(err.value)


def test_torchvision_weight_name_loads_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    torch.manual_seed(0)
    reference = resnet18(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(
        reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    )  # IMAGENET1K_V1's file name
    encoder = build_encoder("resnet18", pretrained_weights="IMAGENET1K_V1")
    assert torch.allclose(encoder.backbone.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))


def _no_network(url, *args, **kwargs):
    raise OSError(f"no network to fetch {url}")


def test_unknown_timm_model_is_refused_when_the_config_is_validated(tmp_path):
    values = {"data": str(tmp_path / "absent"), "encoder": {"arch": "timm/no_such_net"}}
    with pytest.raises(ConfigError, match=r"encoder.arch 'timm/no_such_net': timm has no model 'no_such_net'"):
        build_config(PretrainConfig, base=values)
    with pytest.raises(ConfigError, match=r"encoder.arch 'vgg16' is not one of .*timm/<name>"):
        build_config(PretrainConfig, base={**values, "encoder": {"arch": "vgg16"}})
    config = build_config(
        PretrainConfig, base={**values, "encoder": {"arch": "timm/resnet10t", "pretrained_weights": "c3_in1k"}}
    )
    assert config.encoder.arch == "timm/resnet10t" and not list(tmp_path.iterdir())
    preset = build_config(PretrainConfig, resolve_config_path("pretrain_padchest_densenet"), [f"data={tmp_path}"])
    assert preset.encoder.arch == "timm/densenet121" and preset.method == "cf-simclr"


def test_a_timm_vit_is_made_for_its_training_images_and_refuses_a_size_its_patches_do_not_tile(
    stores, tmp_path, monkeypatch
):
    from timm.models import vision_transformer

    vit = "timm/vit_tiny_patch16_224"
    assert with_image_size(vit, {}, (32, 64)) == {"img_size": [32, 64]}
    assert with_image_size(vit, {"img_size": 48}, (32, 32)) == {"img_size": 48}  # the user's own: kept
    assert with_image_size("timm/resnet10t", {}, (30, 30)) == {} and with_image_size("small", {}, (30, 30)) == {}
    with pytest.raises(
        ConfigError,
        match=r"encoder timm/vit_tiny_patch16_224: the training images' size 40x32 is not a multiple of its patch "
        r"size 16x16; prepare the store at a multiple of it",
    ):
        with_image_size(vit, {}, (40, 32))
    encoder = build_encoder(vit, **with_image_size(vit, {}, (32, 64))).eval()
    assert encoder.backbone.pos_embed.shape[1] == 1 + 2 * 4  # the class token and the 2x4 patch grid
    unchanged = []
    resample = vision_transformer.resample_abs_pos_embed

    def spy(posemb, *args, **kwargs):
        resampled = resample(posemb, *args, **kwargs)
        unchanged.append(resampled is posemb)
        return resampled

    monkeypatch.setattr(vision_transformer, "resample_abs_pos_embed", spy)
    encoder(torch.rand(2, 1, 32, 64))
    encoder(torch.rand(2, 1, 16, 16))  # another size (DINO's local crops) is still resampled
    assert unchanged == [True, False]
    config = pretrain_config(stores, encoder={"arch": "timm/test_vit", "arch_kwargs": {"patch_size": 6}})
    with pytest.raises(ConfigError, match=rf"encoder timm/test_vit: the training images' size {SIZE}x{SIZE} .* 6x6"):
        pretrain.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_one_epoch_of_simclr_and_dino_pretraining_with_timm_encoders(stores, tmp_path):
    """SimCLR with a timm CNN; DINO (features only, no iBOT) with a timm ViT on 16 px global and 8 px local crops."""
    trainer = {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "log_every_n_steps": 1}
    cnn, vit = (
        {"arch": "timm/test_resnet"},
        {"arch": "timm/test_vit", "arch_kwargs": {"patch_size": 4}},  # img_size: the store's
    )
    dino = {"prototypes": 16, "head_hidden": 16, "head_bottleneck": 8, "n_local": 2, "local_size": 8}
    runs = [
        (
            "simclr",
            pretrain_config(stores, method="cf-simclr", cf_store=str(stores / "cf"), encoder=cnn, trainer=trainer),
            96,
        ),
        (
            "dino",
            pretrain_config(
                stores, method="cf-dino", cf_store=str(stores / "cf"), encoder=vit, trainer=trainer, dino=dino
            ),
            64,
        ),
    ]
    for name, config, dim in runs:
        manifest = pretrain.run(config, tmp_path / name)
        assert manifest["status"] == "complete" and manifest["steps"] > 0
        loaded, info = load_encoder(tmp_path / name)
        assert info["arch"] == config.encoder.arch and info["feature_dim"] == dim and info["image_size"] == [SIZE, SIZE]
        assert loaded(torch.rand(2, 1, SIZE, SIZE)).shape == (2, dim)
        if name == "dino":
            assert info["arch_kwargs"] == {"patch_size": 4, "img_size": [SIZE, SIZE]}
        images = ImageStore.open(stores / "data").images
        features = extract_features(loaded, images, batch_size=5)
        assert features.shape == (len(images), dim) and np.isfinite(features).all()
    with pytest.raises(ConfigError, match="dino.ibot_weight needs a ViT encoder"):
        pretrain_config(stores, method="cf-dino", encoder=vit, dino={"ibot_weight": 1.0})
