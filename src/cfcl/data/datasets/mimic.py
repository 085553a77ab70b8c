"""MIMIC-CXR-JPG (PhysioNet, v2.0.0): DICOM metadata, CheXpert-labeller findings per study, the
official split, and JPEGs at ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import Field

from cfcl.config import StrictModel
from cfcl.data.datasets.chexpert import COMPETITION_FINDINGS, Uncertain, labeller_values, resolve_uncertain
from cfcl.data.datasets.common import Findings, Table, findings_table, keep, read_table

METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "ViewPosition"]
STUDY = ["subject_id", "study_id"]
IDS = {"dicom_id": str, "subject_id": str, "study_id": str}
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "test": "test"}  # ``split: official``


class MimicOptions(StrictModel):
    """Reference filter: frontal views (``ViewPosition`` AP or PA). Findings: the labeller's
    observations of each image's study, -1 by ``uncertain``. MIMIC-CXR records no scanner: the
    domain is a column of the metadata table (default ``ViewPosition``; e.g.
    ``PerformedProcedureStepDescription`` tells portable from department studies)."""

    metadata_csv: str = "mimic-cxr-2.0.0-metadata.csv"
    labels_csv: str = "mimic-cxr-2.0.0-chexpert.csv"
    split_csv: str = "mimic-cxr-2.0.0-split.csv"
    images: str = "files"
    findings: Findings = Field(default_factory=lambda: list(COMPETITION_FINDINGS), min_length=1)
    uncertain: Uncertain = "zeros"
    views: list[str] = ["PA", "AP"]
    domain_column: str = "ViewPosition"


def as_distributed(path: Path) -> Path:
    """``path``, or ``path.gz`` when only that exists (PhysioNet serves the tables gzipped)."""
    packed = path.with_name(path.name + ".gz")
    return packed if not path.exists() and packed.is_file() else path


def image_path(images: Path, subject: str, study: str, dicom: str) -> Path:
    return images / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def load(root: Path, options: MimicOptions) -> Table:
    meta = read_table(
        as_distributed(root / options.metadata_csv), METADATA_COLUMNS + [options.domain_column], dtype=IDS
    )
    labels_path = as_distributed(root / options.labels_csv)
    labels = read_table(labels_path, STUDY + options.findings, dtype=IDS)
    labels[options.findings] = labeller_values(labels, options.findings, labels_path)
    split_path = as_distributed(root / options.split_csv)
    split = read_table(split_path, ["dicom_id", "split"], dtype=IDS)
    dropped: dict[str, int] = {}
    meta = keep(meta, meta["ViewPosition"].isin(options.views), f"ViewPosition not in {options.views}", dropped)
    meta = keep(meta, meta[options.domain_column].notna(), f"{options.domain_column} missing", dropped)
    studies = labels.drop_duplicates(STUDY).set_index(STUDY)[options.findings].assign(labelled=True)
    joined = meta.join(studies, on=STUDY)
    joined = keep(joined, joined["labelled"].notna(), f"study not in {options.labels_csv}", dropped)
    official = split.drop_duplicates("dicom_id").set_index("dicom_id")["split"]
    rows = pd.DataFrame(
        {
            "path": [
                str(image_path(root / options.images, *ids))
                for ids in zip(joined["subject_id"], joined["study_id"], joined["dicom_id"])
            ],
            "image_id": joined["dicom_id"],
            "patient_id": joined["subject_id"],
            "domain": joined[options.domain_column].astype(str),
            "sex": "",
            "age": float("nan"),
            "laterality": "",
            "view": joined["ViewPosition"],
            "study_id": joined["study_id"],
            "official_split": joined["dicom_id"].map(official).fillna(""),
        }
    )
    findings = {name: resolve_uncertain(joined[name], options.uncertain) for name in options.findings}
    return findings_table(rows, findings, dropped, options.domain_column, str(split_path))
