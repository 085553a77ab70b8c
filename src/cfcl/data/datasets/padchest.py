"""PadChest (BIMCV): the label CSV as distributed, 16-bit PNGs under ``ROOT/<ImageDir>/<ImageID>``."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from cfcl.config import StrictModel
from cfcl.data.datasets.common import (
    DatasetError,
    Findings,
    Table,
    findings_table,
    keep,
    normalise_sex,
    read_table,
)

COLUMNS = [
    "ImageID",
    "ImageDir",
    "PatientID",
    "Projection",
    "Pediatric",
    "PatientSex_DICOM",
    "PatientBirth",
    "StudyDate_DICOM",
    "Labels",
]


class PadChestOptions(StrictModel):
    """Reference filters: PA projection, adults, no 'exclude' / 'suboptimal study' reports.
    ``findings`` (names in ``Labels``) make a multi-label store; empty: the single ``label``."""

    csv: str = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    label: str = "pneumonia"
    findings: Findings = []
    projections: list[str] = ["PA"]
    drop_labels: list[str] = ["exclude", "suboptimal study"]
    domain_column: str = "Manufacturer_DICOM"


def parse_labels(text, source: str) -> list[str]:
    """PadChest's ``Labels`` cell, e.g. ``"['pneumonia', ' infiltrates']"`` -> stripped names."""
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DatasetError(f"{source}: column 'Labels' holds {text!r}, expected a list like \"['normal']\"") from None
    if not isinstance(value, (list, tuple)):
        raise DatasetError(f"{source}: column 'Labels' holds {text!r}, expected a list like \"['normal']\"")
    return [str(v).strip().lower() for v in value]


def load(root: Path, options: PadChestOptions) -> Table:
    source = root / options.csv
    table = read_table(source, COLUMNS + [options.domain_column], dtype={"PatientID": str, "ImageID": str})
    dropped: dict[str, int] = {}
    table = keep(
        table, table["Projection"].isin(options.projections), f"projection not in {options.projections}", dropped
    )
    table = keep(table, table["Pediatric"].astype(str).str.strip().str.lower() == "no", "paediatric", dropped)
    labels = table["Labels"].map(lambda t: parse_labels(t, str(source)))
    listed = set().union(*labels)
    never = [name for name in options.findings if name not in listed]
    if never:
        raise DatasetError(
            f"{source}: column 'Labels' never lists finding {never[0]!r} (padchest.findings; names are lower case)"
        )
    excluded = labels.map(lambda names: any(d in names for d in options.drop_labels))
    table = keep(table, ~excluded, f"labels contain one of {options.drop_labels}", dropped)
    labels = labels[~excluded]
    table = keep(table, table[options.domain_column].notna(), f"{options.domain_column} missing", dropped)
    labels = labels[table.index]
    birth = pd.to_numeric(table["PatientBirth"], errors="coerce")
    study_year = pd.to_numeric(table["StudyDate_DICOM"].astype(str).str[:4], errors="coerce")
    rows = pd.DataFrame(
        {
            "path": [str(root / d / i) for d, i in zip(table["ImageDir"].astype(str), table["ImageID"])],
            "image_id": table["ImageID"],
            "patient_id": table["PatientID"],
            "domain": table[options.domain_column].astype(str),
            "sex": normalise_sex(table["PatientSex_DICOM"]),
            "age": study_year - birth,
            "laterality": "",
            "projection": table["Projection"],
        }
    )
    if options.findings:
        findings = {name: labels.map(lambda names, name=name: float(name in names)) for name in options.findings}
        return findings_table(rows, findings, dropped, options.domain_column)
    label = labels.map(lambda names: options.label if options.label in names else "negative")
    return Table(rows.assign(label=label), ["negative", options.label], dropped, domain_source=options.domain_column)
