"""RSNA Pneumonia Detection (Kaggle stage 2): box labels, class info, and DICOMs named by patient."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cfcl.config import StrictModel
from cfcl.data.datasets.common import DatasetError, Table, normalise_sex, read_table


class RsnaOptions(StrictModel):
    """Label: ``Target`` (1 if any opacity box). Sex, age and view come from the DICOM headers;
    the domain is one header attribute (default ``ViewPosition``: AP / PA)."""

    labels_csv: str = "stage_2_train_labels.csv"
    class_csv: str = "stage_2_detailed_class_info.csv"
    images: str = "stage_2_train_images"
    domain_attribute: str = "ViewPosition"


def read_headers(paths: list[Path], attributes: list[str], skip_bad: bool) -> tuple[list[dict], list[dict]]:
    """Header attributes of each DICOM (no pixel data); unreadable files raise or, with skip_bad, are listed."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    found, bad = [], []
    for path in tqdm(paths, desc="reading DICOM headers", unit="file", mininterval=2.0, disable=None):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=attributes)
        except (OSError, InvalidDicomError) as exc:
            if not skip_bad:
                raise DatasetError(f"{path}: cannot read the DICOM header ({type(exc).__name__}: {exc})") from None
            kind = "missing file" if not path.is_file() else "unreadable DICOM header"
            bad.append({"path": str(path), "kind": kind, "error": f"{path}: {type(exc).__name__}: {exc}"})
            found.append(None)
            continue
        with warnings.catch_warnings():  # RSNA stores PatientAge as '51', not DICOM's '051Y'
            warnings.filterwarnings("ignore", "Invalid value for VR AS")
            found.append({a: str(ds.get(a, "")).strip() for a in attributes})
    return found, bad


def load(root: Path, options: RsnaOptions, skip_bad: bool = False) -> Table:
    boxes = read_table(root / options.labels_csv, ["patientId", "Target"])
    classes = read_table(root / options.class_csv, ["patientId", "class"])
    target = pd.to_numeric(boxes["Target"], errors="coerce")
    if target.isna().any() or not target.isin([0, 1]).all():
        raise DatasetError(f"{root / options.labels_csv}: column 'Target' must hold 0 or 1")
    per_patient = boxes.assign(Target=target).groupby("patientId", sort=True)["Target"].max()
    info = classes.drop_duplicates("patientId").set_index("patientId")["class"]
    ids = per_patient.index.astype(str).tolist()
    paths = [root / options.images / f"{pid}.dcm" for pid in ids]
    attributes = ["PatientSex", "PatientAge", "ViewPosition", options.domain_attribute]
    headers, bad = read_headers(paths, sorted(set(attributes)), skip_bad)
    good = [i for i, h in enumerate(headers) if h is not None]
    rows = pd.DataFrame(
        {
            "path": [str(paths[i]) for i in good],
            "image_id": [ids[i] for i in good],
            "patient_id": [ids[i] for i in good],
            "domain": [headers[i][options.domain_attribute] for i in good],
            "label": ["pneumonia" if per_patient.iloc[i] == 1 else "negative" for i in good],
            "sex": normalise_sex(pd.Series([headers[i]["PatientSex"] for i in good], dtype=object)),
            "age": pd.to_numeric(pd.Series([headers[i]["PatientAge"] for i in good], dtype=object), errors="coerce"),
            "laterality": "",
            "view": [headers[i]["ViewPosition"] for i in good],
            "class": [str(info.get(ids[i], "")) for i in good],
        }
    )
    return Table(
        rows,
        ["negative", "pneumonia"],
        domain_source=f"DICOM {options.domain_attribute}",
        bad=[{**b, "image_id": Path(b["path"]).stem} for b in bad],
    )
