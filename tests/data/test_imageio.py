"""Decoding of PNG/JPEG/DICOM into uint8 store images: intensity mapping, resize/crop, breast masking."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from cfcl.data.imageio import (
    DecodeOptions,
    ImageReadError,
    MissingDecoderError,
    decode,
    largest_component_mask,
    read_pixels,
    resize_short_side_crop,
    to_unit,
)
from cfcl.errors import CfclError
from support.dicom import ramp, write_claiming, write_compressed, write_dicom
from support.paths import REPO

SQUARE = DecodeOptions(32, 32)


def test_8bit_png_keeps_its_values(tmp_path):
    values = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 200 + 20
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "a.png")
    assert np.array_equal(decode(tmp_path / "a.png", SQUARE), values.astype(np.uint8))


def test_16bit_png_is_min_max_normalised(tmp_path):
    values = ramp(top=40000) + 1000
    Image.fromarray(values).save(tmp_path / "a.png")
    assert read_pixels(tmp_path / "a.png").values.max() == values.max()
    out = decode(tmp_path / "a.png", SQUARE)
    expected = np.rint((values - 1000.0) / 40000.0 * 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out.min() == 0 and out.max() == 255


def test_percentile_normalisation_clips_outliers():
    values = np.full((10, 10), 100.0, dtype=np.float32)
    values[0, 0], values[0, 1] = 0.0, 1e6
    values[5:] = 200.0
    from cfcl.data.imageio import Pixels

    unit = to_unit(Pixels(values), "percentile", (2.0, 98.0))
    assert unit[0, 1] == 1.0 and unit[0, 0] == 0.0
    assert unit[1, 0] == pytest.approx(0.0) and unit[9, 9] == pytest.approx(1.0)


def test_jpeg_colour_is_read_as_grayscale(tmp_path):
    Image.new("RGB", (48, 32), (120, 120, 120)).save(tmp_path / "a.jpg", quality=95)
    out = decode(tmp_path / "a.jpg", SQUARE)
    assert out.shape == (32, 32) and abs(int(out.mean()) - 120) <= 2


def test_dicom_window_matches_the_dicom_linear_formula(tmp_path):
    stored = ramp(top=4095)
    path = write_dicom(tmp_path / "w.dcm", stored, 12, WindowCenter=2000, WindowWidth=1001)
    out = decode(path, SQUARE)
    c, w = 2000.0, 1001.0
    expected = np.clip((stored - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    assert np.abs(out.astype(int) - np.rint(expected * 255).astype(int)).max() <= 1
    assert (out[stored < 1500] == 0).all() and (out[stored > 2500] == 255).all()


def test_dicom_rescale_slope_intercept_is_applied_before_the_window(tmp_path):
    stored = ramp(top=4095)
    path = write_dicom(
        tmp_path / "r.dcm", stored, 12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=2001
    )
    values = stored * 2.0 - 1000.0
    expected = np.clip((values - 2999.5) / 2000 + 0.5, 0, 1)
    assert np.abs(decode(path, SQUARE).astype(int) - np.rint(expected * 255)).max() <= 1
    assert read_pixels(path).value_range == (-1000.0, 4095 * 2.0 - 1000.0)


def test_monochrome1_comes_out_inverted(tmp_path):
    stored = ramp(top=4095)
    mono2 = decode(write_dicom(tmp_path / "m2.dcm", stored, 12), SQUARE)
    mono1 = decode(write_dicom(tmp_path / "m1.dcm", stored, 12, PhotometricInterpretation="MONOCHROME1"), SQUARE)
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))
    assert mono1[0, 0] == 255 and mono1[-1, -1] == 0


def test_dicom_voi_lut_sequence_is_used(tmp_path):
    stored = (np.arange(32 * 32) % 4).reshape(32, 32).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.add_new(0x00283006, "US", [200, 10, 30, 100])
    from pydicom.sequence import Sequence

    path = write_dicom(tmp_path / "lut.dcm", stored, 12, VOILUTSequence=Sequence([item]))
    out = decode(path, SQUARE)
    lut = np.array([200, 10, 30, 100], dtype=float)
    expected = np.rint((lut[stored] - 10) / 190 * 255)
    assert np.abs(out - expected).max() <= 1


def test_resize_short_side_then_centre_crop():
    image = np.zeros((40, 80), dtype=np.float32)
    image[:, 20:60] = 1.0
    out = resize_short_side_crop(image, 20, 20)
    assert out.shape == (20, 20) and np.allclose(out[:, 1:-1], 1.0) and out.min() > 0.8
    tall = resize_short_side_crop(np.ones((100, 50), np.float32), 24, 16)
    assert tall.shape == (24, 16)


def test_resize_is_antialiased():
    stripes = np.tile(np.array([0.0, 1.0], dtype=np.float32), (64, 32))
    out = resize_short_side_crop(stripes, 8, 8)
    assert np.allclose(out, 0.5, atol=0.05)


def test_breast_mask_keeps_largest_component_and_right_breasts_are_flipped(tmp_path):
    image = np.zeros((32, 32), dtype=np.uint8)
    image[4:28, 0:14] = 180
    image[10:14, 5:8] = 0
    image[1:3, 26:30] = 250
    Image.fromarray(image).save(tmp_path / "mammo.png")
    options = DecodeOptions(32, 32, breast_mask=True, flip_right=True)
    left = decode(tmp_path / "mammo.png", options, "L")
    assert left[1:3, 26:30].max() == 0
    assert (left[4:28, 0:14][image[4:28, 0:14] > 0] == 180).all()
    right = decode(tmp_path / "mammo.png", options, "R")
    assert np.array_equal(right, left[:, ::-1])
    mask = largest_component_mask(np.pad(np.ones((4, 4)), 2), 0.5)
    assert mask.sum() == 16


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n broken", b"not an image"])
def test_corrupt_files_raise_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.png"):
        decode(path, SQUARE)


def test_corrupt_dicom_and_missing_file(tmp_path):
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x01\x02")
    with pytest.raises(ImageReadError, match="bad.dcm"):
        decode(path, SQUARE)
    with pytest.raises(CfclError, match="missing.png.*does not exist"):
        decode(tmp_path / "missing.png", SQUARE)


LOSSLESS_SYNTAXES = [RLELossless, JPEGLSLossless, JPEG2000Lossless]


@pytest.mark.parametrize("syntax", LOSSLESS_SYNTAXES, ids=lambda uid: uid.name)
@pytest.mark.parametrize(
    ("bits", "attributes"),
    [
        (12, {"WindowCenter": 1800, "WindowWidth": 2500}),
        (8, {"PhotometricInterpretation": "MONOCHROME1"}),
    ],
    ids=["12-bit windowed", "8-bit MONOCHROME1"],
)
def test_losslessly_compressed_dicom_decodes_to_the_uncompressed_pixels(tmp_path, syntax, bits, attributes):
    noise = np.random.default_rng(0).integers(0, 2**bits // 8, (32, 48))
    stored = (ramp(32, 48, 2**bits - 1) * 7 // 8 + noise).astype(np.uint16 if bits > 8 else np.uint8)
    plain = write_dicom(tmp_path / "plain.dcm", stored, bits, **attributes)
    packed = write_compressed(tmp_path / "packed.dcm", stored, bits, syntax, **attributes)
    written = pydicom.dcmread(packed)
    assert written.file_meta.TransferSyntaxUID == syntax and written.PixelData != stored.tobytes()
    assert np.array_equal(read_pixels(packed).values, read_pixels(plain).values)
    options = DecodeOptions(16, 20)
    assert np.array_equal(decode(packed, options), decode(plain, options))


def test_dicom_without_an_installed_decoder_says_what_to_install_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(get_decoder(JPEGLosslessSV1), "_available", {})
    path = write_claiming(tmp_path / "lossless.dcm", JPEGLosslessSV1, b"\xff\xd8\xff\xd9")
    with pytest.raises(MissingDecoderError) as caught:
        decode(path, SQUARE)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: pixel data compressed as JPEG Lossless")
    assert "(1.2.840.10008.1.2.4.70)" in message and message.endswith("pip install 'cfcl[dicom]'")


def test_corrupt_compressed_dicom_names_its_transfer_syntax_in_one_line(tmp_path):
    path = write_claiming(tmp_path / "broken.dcm", JPEGLosslessSV1, b"\xff\xd8garbage\xff\xd9")
    with pytest.raises(ImageReadError) as caught:
        decode(path, SQUARE)
    message = str(caught.value)
    assert not isinstance(caught.value, MissingDecoderError) and "\n" not in message
    assert message.startswith(f"{path}: cannot decode its JPEG Lossless") and "1.2.840.10008.1.2.4.70" in message


def test_the_test_extra_installs_the_dicom_extra_whose_plugins_decode_hospital_exports():
    """CI installs ``.[test]``: with it, every common compressed transfer syntax has a decoder."""
    import tomllib

    from packaging.requirements import Requirement
    from pydicom.uid import (
        JPEG2000,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLSNearLossless,
    )

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.name == "cfcl" and "dicom" in r.extras for r in map(Requirement, extras["test"]))
    for syntax in [
        RLELossless,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
    ]:
        assert get_decoder(syntax).is_available, syntax.name
