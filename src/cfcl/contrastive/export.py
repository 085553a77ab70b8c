"""``cfcl export``: a pretrained encoder as a file that loads without cfcl.

- ``torchvision``: a plain state dict for ``torchvision.models.resnetXX(num_classes=feature_dim)``
  after ``model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)``; its
  ``fc`` is the identity, so the model returns cfcl's features. The input normalisation is not
  part of a torchvision ResNet: feed ``(x - 0.5) / 0.25`` for images ``x`` in [0, 1].
- ``torchscript`` and ``onnx``: the whole encoder, normalisation included: float32
  ``[B, 1, H, W]`` images in [0, 1] -> float32 ``[B, feature_dim]`` features (any batch size).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import warnings
from pathlib import Path

import torch

from cfcl import atomic
from cfcl.contrastive.encoders import INPUT_MEAN, INPUT_STD, Encoder, encoder_file, load_encoder
from cfcl.errors import CfclError

FORMATS = ("torchvision", "torchscript", "onnx")
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50")
LIBRARIES = {"torchvision": (), "torchscript": (), "onnx": ("onnx", "onnxscript")}
INPUT_NAME, OUTPUT_NAME = "images", "features"


class ExportError(CfclError):
    """An encoder cannot be written in the requested format (unknown format, architecture, missing library)."""


def require_libraries(fmt: str) -> None:
    """One-line error naming the package to install when ``fmt``'s exporter library is missing."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")
    for module in LIBRARIES[fmt]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ExportError(
                f"export format {fmt!r} needs the Python package {module!r}: pip install {module} "
                "(or pip install 'cfcl[export]')"
            ) from None


def input_record(encoder: Encoder, info: dict) -> dict:
    """What the exported model expects and returns, stored inside TorchScript and ONNX files."""
    height, width = info["image_size"]
    return {
        "input": f"float32 [B, 1, {height}, {width}] in [0, 1] (0 black; bright means dense)",
        "output": f"float32 [B, {encoder.feature_dim}] features",
        "arch": encoder.arch,
        "method": str(info.get("method", "")),
        "seed": str(info.get("seed", "")),
    }


def torchvision_state_dict(encoder: Encoder) -> dict[str, torch.Tensor]:
    """The backbone's weights plus an identity ``fc``, for ``torchvision.models.<arch>(num_classes=feature_dim)``."""
    if encoder.arch not in TORCHVISION_ARCHS:
        raise ExportError(
            f"encoder architecture {encoder.arch!r} is not a torchvision model (torchvision export takes "
            f"{', '.join(TORCHVISION_ARCHS)}); export it as torchscript or onnx"
        )
    state = {k: v.detach().clone() for k, v in encoder.backbone.state_dict().items()}
    state["fc.weight"] = torch.eye(encoder.feature_dim)
    state["fc.bias"] = torch.zeros(encoder.feature_dim)
    return state


def torchscript_bytes(encoder: Encoder, example: torch.Tensor, record: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        traced = torch.jit.trace(encoder, example)
        torch.jit.save(traced, buffer, _extra_files={"cfcl.json": json.dumps(record)})
    return buffer.getvalue()


def onnx_bytes(encoder: Encoder, example: torch.Tensor, record: dict) -> bytes:
    program = torch.onnx.export(
        encoder,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    model = program.model_proto
    for key, value in record.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"cfcl.{key}", value
    return model.SerializeToString()


def export_encoder(path: str | os.PathLike, fmt: str, out: str | os.PathLike) -> str:
    """Write the encoder at ``path`` (``encoder.pt`` or a pretrain folder) to ``out`` as ``fmt``; returns what to tell
    the user."""
    require_libraries(fmt)
    encoder, info = load_encoder(path)
    out = Path(out)
    height, width = info["image_size"]
    record = input_record(encoder, info)
    if fmt == "torchvision":
        atomic.torch_save(torchvision_state_dict(encoder), out)
        return (
            f"wrote {out}: state dict for torchvision.models.{encoder.arch}(num_classes={encoder.feature_dim}) after "
            "model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False); "
            f"feed (x - {INPUT_MEAN}) / {INPUT_STD} for x {record['input']}"
        )
    example = torch.zeros(2, 1, height, width)
    data = torchscript_bytes(encoder, example, record) if fmt == "torchscript" else onnx_bytes(encoder, example, record)
    atomic.write_bytes(out, data)
    return (
        f"wrote {out} ({fmt}) from {encoder_file(path)}: input {INPUT_NAME} {record['input']}, output "
        f"{record['output']}"
    )
