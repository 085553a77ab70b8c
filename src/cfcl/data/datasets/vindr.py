"""VinDr-Mammo: breast-level annotations, DICOM metadata table, ``images/<study_id>/<image_id>.dicom``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cfcl.config import StrictModel
from cfcl.data.datasets.common import TRAIN_VAL, DatasetError, Table, keep, parse_age, read_table

ANNOTATION_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "breast_density", "split"]
DENSITY = ["A", "B", "C", "D"]
OFFICIAL_SPLITS = {"training": TRAIN_VAL, "test": "test"}  # ``split: official``: validation studies from training


class VindrOptions(StrictModel):
    """Label: ``breast_density`` ("DENSITY A".."DENSITY D"). Domain: a column of ``metadata.csv``
    (default the scanner model). VinDr has no patient id: each study is one patient's exam."""

    annotations_csv: str = "breast-level_annotations.csv"
    metadata_csv: str = "metadata.csv"
    images: str = "images"
    image_id_column: str = "SOP Instance UID"
    domain_column: str = "Manufacturer's Model Name"
    age_column: str = "Patient's Age"
    breast_mask: bool = True
    flip_right: bool = True


def load(root: Path, options: VindrOptions) -> Table:
    notes = read_table(root / options.annotations_csv, ANNOTATION_COLUMNS)
    meta_path = root / options.metadata_csv
    meta = read_table(meta_path, [options.image_id_column, options.domain_column, options.age_column])
    meta = meta.drop_duplicates(options.image_id_column).set_index(options.image_id_column)
    dropped: dict[str, int] = {}
    density = notes["breast_density"].astype(str).str.strip().str.upper().str.replace("DENSITY", "").str.strip()
    notes = keep(notes.assign(density=density), density.isin(DENSITY), "breast_density not DENSITY A-D", dropped)
    joined = notes.join(meta[[options.domain_column, options.age_column]], on="image_id")
    if joined[options.domain_column].isna().all() and len(joined):
        raise DatasetError(
            f"{meta_path}: no {options.image_id_column!r} matches an image_id of {options.annotations_csv}"
        )
    joined = keep(
        joined, joined[options.domain_column].notna(), f"no {options.domain_column} in {options.metadata_csv}", dropped
    )
    rows = pd.DataFrame(
        {
            "path": [
                str(root / options.images / s / f"{i}.dicom") for s, i in zip(joined["study_id"], joined["image_id"])
            ],
            "image_id": joined["image_id"].astype(str),
            "patient_id": joined["study_id"].astype(str),
            "domain": joined[options.domain_column].astype(str).str.strip(),
            "label": joined["density"],
            "sex": "F",
            "age": parse_age(joined[options.age_column]),
            "laterality": joined["laterality"].fillna("").astype(str),
            "view": joined["view_position"].astype(str),
            "official_split": joined["split"].astype(str),
        }
    )
    return Table(
        rows,
        DENSITY,
        dropped,
        breast_mask=options.breast_mask,
        flip_right=options.flip_right,
        domain_source=options.domain_column,
        split_source=f"{root / options.annotations_csv} column 'split'",
    )
