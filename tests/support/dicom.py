"""DICOM files as modalities and hospital exports write them, for the decoding and dataset tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid


def write_dicom(path: Path, stored: np.ndarray, bits_stored: int = 12, **attributes) -> Path:
    """A DICOM file as a modality writes it: stored values plus Image Pixel / VOI / patient attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.Modality = "DX"
    photometric = attributes.pop("PhotometricInterpretation", "MONOCHROME2")
    ds.set_pixel_data(stored, photometric, bits_stored)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for key, value in attributes.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_compressed(path: Path, stored: np.ndarray, bits_stored: int, syntax: UID, **attributes) -> Path:
    """:func:`write_dicom`, then its pixel data compressed by pydicom's encoders in ``syntax``."""
    write_dicom(path, stored, bits_stored, **attributes)
    ds = pydicom.dcmread(path)
    ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_claiming(path: Path, syntax: UID, data: bytes) -> Path:
    """A DICOM file whose header says ``syntax`` and whose pixel data is the one fragment ``data``."""
    write_dicom(path, ramp(8, 8), 12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def ramp(h: int = 32, w: int = 32, top: int = 4095) -> np.ndarray:
    """Stored values rising row by row from 0 to ``top``: every decoded intensity is predictable."""
    return np.linspace(0, top, h * w).reshape(h, w).astype(np.uint16)
