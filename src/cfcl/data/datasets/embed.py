"""EMBED (Emory Breast Imaging Dataset): metadata and clinical tables, DICOMs under ``anon_dicom_path``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from cfcl.config import StrictModel
from cfcl.data.datasets.common import Table, keep, normalise_sex, read_table

METADATA_COLUMNS = ["empi_anon", "acc_anon", "anon_dicom_path", "FinalImageType", "ImageLateralityFinal"]
CLINICAL_COLUMNS = ["acc_anon", "tissueden", "age_at_study"]
DENSITY = {1: "A", 2: "B", 3: "C", 4: "D"}


class EmbedOptions(StrictModel):
    """Reference filters: 2D images only (no C-views), known density A-D (tissueden 5 = male /
    unknown is dropped). Domain: scanner model. Breasts masked and right breasts flipped."""

    metadata_csv: str = "tables/EMBED_OpenData_metadata.csv"
    clinical_csv: str = "tables/EMBED_OpenData_clinical.csv"
    path_prefix: str = "/mnt/NAS2/mammo/anon_dicom/"
    image_types: list[str] = ["2D"]
    domain_column: str = "ManufacturerModelName"
    breast_mask: bool = True
    flip_right: bool = True


def image_path(root: Path, recorded: str, prefix: str) -> Path:
    """``anon_dicom_path`` is an absolute path on Emory's server; the part after ``prefix`` is the
    path inside ``root``."""
    text = str(recorded)
    relative = text[len(prefix) :] if prefix and text.startswith(prefix) else text.lstrip("/")
    return root.joinpath(*PurePosixPath(relative).parts)


def load(root: Path, options: EmbedOptions) -> Table:
    meta = read_table(
        root / options.metadata_csv,
        METADATA_COLUMNS + [options.domain_column],
        dtype={"acc_anon": str, "empi_anon": str},
    )
    clinical = read_table(root / options.clinical_csv, CLINICAL_COLUMNS, dtype={"acc_anon": str})
    dropped: dict[str, int] = {}
    meta = keep(
        meta, meta["FinalImageType"].isin(options.image_types), f"FinalImageType not in {options.image_types}", dropped
    )
    density = pd.to_numeric(clinical["tissueden"], errors="coerce")
    exams = (
        clinical.assign(tissueden=density)
        .dropna(subset=["tissueden"])
        .drop_duplicates("acc_anon")
        .set_index("acc_anon")
    )
    meta = meta.join(
        exams[["tissueden", "age_at_study"] + (["GENDER_DESC"] if "GENDER_DESC" in exams else [])], on="acc_anon"
    )
    meta = keep(meta, meta["tissueden"].isin(list(DENSITY)), "density unknown or 5 (male / not assessed)", dropped)
    meta = keep(meta, meta[options.domain_column].notna(), f"{options.domain_column} missing", dropped)
    rows = pd.DataFrame(
        {
            "path": [str(image_path(root, p, options.path_prefix)) for p in meta["anon_dicom_path"]],
            "image_id": meta["anon_dicom_path"].map(lambda p: PurePosixPath(str(p)).stem),
            "patient_id": meta["empi_anon"].astype(str),
            "domain": meta[options.domain_column].astype(str).str.strip(),
            "label": meta["tissueden"].astype(int).map(DENSITY),
            "sex": normalise_sex(meta["GENDER_DESC"]) if "GENDER_DESC" in meta else "F",
            "age": pd.to_numeric(meta["age_at_study"], errors="coerce"),
            "laterality": meta["ImageLateralityFinal"].fillna("").astype(str),
            "view": meta["ViewPosition"].fillna("").astype(str) if "ViewPosition" in meta else "",
            "exam_id": meta["acc_anon"].astype(str),
        }
    )
    return Table(
        rows,
        list(DENSITY.values()),
        dropped,
        breast_mask=options.breast_mask,
        flip_right=options.flip_right,
        domain_source=options.domain_column,
    )
