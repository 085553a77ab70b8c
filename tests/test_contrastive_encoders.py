"""Encoders: shapes, input normalisation, ImageNet initialisation from a file, save/load round trip."""

import pytest
import torch
from torchvision.models import resnet18

from cfcl.contrastive.encoders import build_encoder, load_encoder, save_encoder
from cfcl.errors import CheckpointError, ConfigError


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
        "arch": "small", "arch_kwargs": {"width": 4, "blocks": [1, 2]}, "feature_dim": 8,
        "image_size": [16, 16], "in_channels": 1, "method": "simclr", "seed": 3,
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
