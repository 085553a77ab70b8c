"""Decode-and-resize throughput of ``cfcl data prepare`` on generated 16-bit PNGs and DICOMs.

Writes ``--count`` PNGs and ``--dicom-count`` DICOMs of 1024 x 1024 (12 bits stored, windowed)
into a temporary folder, then runs the real prepare stage (csv adapter -> image store) with
each ``--workers`` setting and prints one JSON line with images per second. A handful of
distinct images are generated and copied to fill the folder: decoding cost does not depend
on whether files are distinct.

    python benchmarks/prepare_speed.py                    # 2000 PNGs, 200 DICOMs, 1 and 2 workers
    python benchmarks/prepare_speed.py --count 200 --dicom-count 50
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cfcl.data.prepare import PrepareConfig, run

SIDE = 1024
DISTINCT = 16


def radiograph(rng: np.random.Generator) -> np.ndarray:
    """A smooth 12-bit body-like blob with detector noise: compresses like a real radiograph."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    cx, cy = rng.uniform(0.4, 0.6, 2)
    body = 1500 + 1800 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / rng.uniform(0.05, 0.12))
    ribs = 200 * np.sin(rng.uniform(15, 25) * y) * (body > 2000)
    return (body + ribs + rng.normal(0, 20, body.shape)).clip(0, 4095).astype(np.uint16)


def write_dicom(path: Path, stored: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.set_pixel_data(stored, "MONOCHROME2", 12)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.WindowCenter, ds.WindowWidth = 2500, 3000
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.save_as(path, enforce_file_format=True)


def make_folder(folder: Path, count: int, suffix: str, seed: int) -> Path:
    """``count`` image files plus a metadata.csv the csv adapter reads."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True)
    originals = []
    for i in range(min(DISTINCT, count)):
        path = images / f"{i:05d}{suffix}"
        stored = radiograph(rng)
        if suffix == ".png":
            Image.fromarray((stored * 16).astype(np.uint16)).save(path)
        else:
            write_dicom(path, stored)
        originals.append(path)
    for i in range(len(originals), count):
        shutil.copyfile(originals[i % len(originals)], images / f"{i:05d}{suffix}")
    rows = [{"path": f"{i:05d}{suffix}", "domain": "a", "label": "0", "patient_id": str(i)} for i in range(count)]
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder


def throughput(root: Path, out: Path, workers: int, size: int) -> float:
    config = PrepareConfig.model_validate(
        {"dataset": "csv", "root": str(root), "size": size, "workers": workers, "csv": {"images": "images"}}
    )
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    images = run(config, out)["images"]
    return round(images / (time.perf_counter() - start), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="PNG files (docs/performance.md: >= 2000)")
    parser.add_argument("--dicom-count", type=int, default=200, help="DICOM files")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--size", type=int, default=224, help="output size")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    result = {
        "benchmark": "prepare_speed",
        "input": f"{SIDE}x{SIDE}",
        "size": args.size,
        "cpus": os.cpu_count(),
        "png_count": args.count,
        "dicom_count": args.dicom_count,
    }
    with tempfile.TemporaryDirectory(prefix="cfcl-prepare-speed-") as tmp:
        tmp = Path(tmp)
        for kind, suffix, count in (("png16", ".png", args.count), ("dicom", ".dcm", args.dicom_count)):
            if count <= 0:
                continue
            root = make_folder(tmp / kind, count, suffix, seed=0)
            for w in workers:
                result[f"{kind}_img_per_s_workers_{w}"] = throughput(root, tmp / f"{kind}-out-{w}", w, args.size)
            shutil.rmtree(root)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
