"""`cfcl export`: encoders as torchvision / TorchScript / ONNX files that reproduce cfcl's features."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision
from torch import nn

from cfcl.cli import main
from cfcl.contrastive.encoders import build_encoder, load_encoder, save_encoder

# torch deprecates TorchScript; loading an exported file is still what its users do
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def saved_encoder(folder, arch: str, size: int, **kwargs):
    torch.manual_seed(3)
    encoder = build_encoder(arch, **kwargs)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a missed buffer would show
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    save_encoder(folder, encoder, {"image_size": [size, size], "method": "cf-simclr", "seed": 0})
    return folder


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return saved_encoder(tmp_path_factory.mktemp("small"), "small", 16, width=4, blocks=[1, 1])


def test_torchvision_state_dict_loads_into_a_torchvision_resnet_and_gives_cfcls_features(tmp_path, capsys):
    folder = saved_encoder(tmp_path / "enc", "resnet18", 32)
    assert main(["export", "--encoder", str(folder), "--format", "torchvision", "--out", str(tmp_path / "r18.pt")]) == 0
    assert "resnet18(num_classes=512)" in capsys.readouterr().out
    model = torchvision.models.resnet18(num_classes=512)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.load_state_dict(torch.load(tmp_path / "r18.pt", weights_only=True))
    encoder, _ = load_encoder(folder)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()((x - 0.5) / 0.25), encoder(x), atol=1e-5, rtol=0)


def test_torchscript_reproduces_the_features_for_any_batch_size_and_records_its_input(small, tmp_path):
    out = tmp_path / "enc.ts"
    assert main(["export", "--encoder", str(small), "--format", "torchscript", "--out", str(out)]) == 0
    extra = {"cfcl.json": ""}
    scripted = torch.jit.load(out, _extra_files=extra)
    assert json.loads(extra["cfcl.json"])["input"].startswith("float32 [B, 1, 16, 16] in [0, 1]")
    encoder, _ = load_encoder(small)
    for batch in (1, 5):
        x = torch.rand(batch, 1, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), encoder(x), atol=1e-5, rtol=0)


def test_onnx_reproduces_the_features_in_onnxruntime_and_records_its_input(small, tmp_path):
    out = tmp_path / "enc.onnx"
    assert main(["export", "--encoder", str(small / "encoder.pt"), "--format", "onnx", "--out", str(out)]) == 0
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert (
        metadata["cfcl.input"].startswith("float32 [B, 1, 16, 16] in [0, 1]")
        and metadata["cfcl.output"] == "float32 [B, 8] features"
    )
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    encoder, _ = load_encoder(small)
    for batch in (1, 5):
        x = torch.rand(batch, 1, 16, 16)
        with torch.no_grad():
            np.testing.assert_allclose(
                session.run(["features"], {"images": x.numpy()})[0], encoder(x).numpy(), atol=1e-5
            )


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_a_missing_export_library_names_the_package_to_install(small, tmp_path, monkeypatch, capsys, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(["export", "--encoder", str(small), "--format", "onnx", "--out", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"needs the Python package '{missing}': pip install {missing}" in err and "\n" not in err
    assert not (tmp_path / "e.onnx").exists()


def test_formats_and_architectures_that_cannot_be_exported_are_one_line_errors(small, tmp_path, capsys):
    assert main(["export", "--encoder", str(small), "--format", "torchvision", "--out", str(tmp_path / "e.pt")]) == 2
    assert "architecture 'small' is not a torchvision model" in capsys.readouterr().err
    assert main(["export", "--encoder", str(small), "--format", "keras", "--out", str(tmp_path / "e.pt")]) == 2
    assert "unknown export format 'keras' (expected one of torchvision, torchscript, onnx)" in capsys.readouterr().err
    assert not (tmp_path / "e.pt").exists()


def test_timm_encoder_exports_as_torchscript_and_onnx_but_not_torchvision(tmp_path, capsys):
    folder = saved_encoder(tmp_path / "enc", "timm/resnet10t", 32)
    assert main(["export", "--encoder", str(folder), "--format", "torchvision", "--out", str(tmp_path / "e.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "architecture 'timm/resnet10t' is not a torchvision model" in err and "\n" not in err
    assert not (tmp_path / "e.pt").exists()
    encoder, _ = load_encoder(folder)
    x = torch.rand(3, 1, 32, 32)
    assert main(["export", "--encoder", str(folder), "--format", "torchscript", "--out", str(tmp_path / "e.ts")]) == 0
    assert main(["export", "--encoder", str(folder), "--format", "onnx", "--out", str(tmp_path / "e.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(tmp_path / "e.ts")(x), encoder(x), atol=1e-5, rtol=0)
        np.testing.assert_allclose(session.run(["features"], {"images": x.numpy()})[0], encoder(x).numpy(), atol=1e-5)
