"""Decode radiographs (PNG/JPEG at 8 or 16 bit, DICOM) into uint8 images of one fixed size.

Every image goes through the same steps: read the stored values, map them to [0, 1]
(:func:`to_unit`), resize the short side and centre-crop to the target size, optionally
mask the breast (largest connected component) and flip right breasts, then quantise.

Intensity mapping (``normalise``):

- ``auto``: 8-bit files (PNG/JPEG, or DICOM without rescale or VOI) are divided by 255; a DICOM with
  a window (Window Center/Width) is mapped from the window's output range (DICOM PS3.3 C.11.2.1.2),
  so the window decides the contrast; everything else (16-bit PNG, DICOM with a VOI LUT sequence or
  without VOI) is min-max normalised per image.
- ``minmax``: per-image min-max for every file.
- ``percentile``: per-image percentiles ``percentiles`` (low, high) mapped to 0 and 1, clipped.

DICOM pixels pass through the modality LUT (Rescale Slope/Intercept) and the VOI LUT or window
(pydicom ``apply_modality_lut`` / ``apply_voi_lut``); MONOCHROME1 images are inverted after
mapping, so bright always means dense.

Compressed DICOM (RLE, JPEG, JPEG Lossless, JPEG-LS, JPEG 2000) is decoded by pydicom's plugins:
RLE natively, the others through the ``dicom`` extra (``pip install 'cfcl[dicom]'``: pylibjpeg and
its libjpeg, openjpeg and RLE plugins). A transfer syntax that no installed plugin decodes is a
:class:`MissingDecoderError` naming the file, the transfer syntax and that extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from cfcl.errors import CfclError

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
Normalise = Literal["auto", "minmax", "percentile"]


DICOM_EXTRA = "pip install 'cfcl[dicom]'"


class ImageReadError(CfclError):
    """An image file is missing, unreadable, corrupt or of a kind cfcl cannot decode."""

    kind = "unreadable or corrupt image"


class MissingDecoderError(ImageReadError):
    """A DICOM file's pixel data is compressed in a transfer syntax no installed plugin decodes."""

    kind = "no decoder for its compression"


@dataclass(frozen=True)
class DecodeOptions:
    """How every image of one prepare run is turned into uint8 ``[height, width]``."""

    height: int
    width: int
    normalise: Normalise = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    breast_mask: bool = False
    mask_threshold: float = 0.05
    flip_right: bool = False


@dataclass
class Pixels:
    """Stored values of one image and what is known about their range."""

    values: np.ndarray
    value_range: tuple[float, float] | None = None
    inverted: bool = False


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def read_raster(path: Path) -> Pixels:
    """PNG/JPEG/TIFF through PIL: 8-bit (``L``, or colour converted to ``L``) or 16-bit (``I;16``)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr"):
                values = np.asarray(img.convert("L"))
                return Pixels(values.astype(np.float32), (0.0, 255.0))
            if img.mode.startswith("I;16") or img.mode in ("I", "F"):
                return Pixels(np.asarray(img).astype(np.float32))
            raise ImageReadError(f"{path}: unsupported image mode {img.mode!r} (expected 8- or 16-bit grayscale)")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable PNG/JPEG image ({exc})") from None


def _window_range(ds) -> tuple[float, float]:
    """Output range of DICOM linear windowing: the stored value range after the modality LUT."""
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def _one_line(exc: Exception) -> str:
    """An exception as ``Type: message`` on one line (pydicom's decoder errors span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _check_decoder(path: Path, syntax) -> None:
    """Refuse compressed pixel data that no installed pydicom plugin decodes, saying what to install."""
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        raise MissingDecoderError(
            f"{path}: pixel data compressed as {syntax.name} ({syntax}), which pydicom cannot decode"
        ) from None
    if not available:
        raise MissingDecoderError(
            f"{path}: pixel data compressed as {syntax.name} ({syntax}) and no installed plugin decodes it; "
            f"install the DICOM decoders with: {DICOM_EXTRA}"
        )


def read_dicom(path: Path) -> Pixels:
    """DICOM through pydicom: modality LUT, then VOI LUT or window; MONOCHROME1 flagged for inversion."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    errors = (InvalidDicomError, OSError, AttributeError, ValueError, KeyError, TypeError, RuntimeError)
    try:
        ds = pydicom.dcmread(path)
    except errors as exc:
        raise ImageReadError(f"{path}: not a readable DICOM image ({_one_line(exc)})") from None
    syntax = ds.file_meta.get("TransferSyntaxUID")
    compressed = syntax is not None and syntax.is_transfer_syntax and syntax.is_compressed
    if compressed:
        _check_decoder(path, syntax)
    try:
        stored = ds.pixel_array
    except errors as exc:
        problem = (
            f"cannot decode its {syntax.name} ({syntax}) pixel data" if compressed else "not a readable DICOM image"
        )
        raise ImageReadError(f"{path}: {problem} ({_one_line(exc)})") from None
    if stored.ndim != 2:
        raise ImageReadError(f"{path}: DICOM pixel data has shape {stored.shape}, expected one 2-D grayscale frame")
    values = apply_modality_lut(stored, ds)
    if ds.get("VOILUTSequence"):
        values, value_range = apply_voi_lut(values, ds), None
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values, value_range = apply_voi_lut(values, ds, prefer_lut=False), _window_range(ds)
    else:
        value_range = (0.0, 255.0) if stored.dtype.itemsize == 1 and values is stored else None
    inverted = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1"
    return Pixels(np.asarray(values, dtype=np.float32), value_range, inverted)


def read_pixels(path: str | Path) -> Pixels:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file {path} does not exist")
    return read_dicom(path) if _is_dicom(path) else read_raster(path)


def to_unit(
    pixels: Pixels, normalise: Normalise = "auto", percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map stored values to float32 in [0, 1] (see the module docstring), inverting MONOCHROME1."""
    values = pixels.values
    if normalise == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, percentiles))
    elif normalise == "auto" and pixels.value_range is not None:
        lo, hi = pixels.value_range
    else:
        lo, hi = float(values.min()), float(values.max())
    unit = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)
    unit = unit.astype(np.float32, copy=False)
    return 1.0 - unit if pixels.inverted else unit


def resize_short_side_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (antialiased bilinear) so the image covers ``height x width``, then crop the centre."""
    h, w = image.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize(
        (new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0
    )
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.asarray(resized)[top : top + height, left : left + width]


def largest_component_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the largest connected region brighter than ``threshold``, holes filled."""
    from scipy import ndimage

    labels, count = ndimage.label(image > threshold)
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def decode(path: str | Path, options: DecodeOptions, laterality: str = "") -> np.ndarray:
    """One file -> uint8 ``[height, width]``; ``laterality`` ('L'/'R') matters only for mammography."""
    unit = to_unit(read_pixels(path), options.normalise, options.percentiles)
    image = resize_short_side_crop(unit, options.height, options.width)
    if options.breast_mask:
        image = image * largest_component_mask(image, options.mask_threshold)
    if options.flip_right and laterality.strip().upper().startswith("R"):
        image = image[:, ::-1]
    return to_uint8(image)
