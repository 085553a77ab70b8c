"""CheXpert (Stanford): ``train.csv`` / ``valid.csv`` with image paths relative to the dataset's parent folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from cfcl.config import StrictModel
from cfcl.data.datasets.common import DatasetError, Table, keep, normalise_sex, read_table

COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]


class CheXpertOptions(StrictModel):
    """Reference filter: frontal PA. CheXpert records no scanner, so the domain is a chosen column
    (default ``AP/PA``: with ``views: [AP, PA]`` the projection becomes the acquisition domain)."""

    files: list[str] = ["train.csv", "valid.csv"]
    label: str = "Pneumonia"
    uncertain: Literal["zeros", "ones", "ignore"] = "zeros"
    views: list[str] = ["PA"]
    domain_column: str = "AP/PA"


def image_path(root: Path, csv_path: str) -> Path:
    """CSV paths start with the dataset folder's own name (``CheXpert-v1.0-small/train/...``);
    they are resolved inside ``root`` whatever that folder is called now."""
    parts = PurePosixPath(csv_path).parts
    return root.joinpath(*parts[1:]) if parts and parts[0].lower().startswith("chexpert") else root / csv_path


def load(root: Path, options: CheXpertOptions) -> Table:
    frames = []
    for name in options.files:
        frame = read_table(root / name, COLUMNS + [options.label, options.domain_column])
        frames.append(frame.assign(official_split=Path(name).stem))
    table = pd.concat(frames, ignore_index=True)
    dropped: dict[str, int] = {}
    table = keep(table, table["Frontal/Lateral"] == "Frontal", "not frontal", dropped)
    table = keep(table, table["AP/PA"].isin(options.views), f"AP/PA not in {options.views}", dropped)
    value = pd.to_numeric(table[options.label], errors="coerce").fillna(0.0)
    if options.uncertain == "ignore":
        table = keep(table, value != -1, f"uncertain {options.label} (policy ignore)", dropped)
        value = value[table.index]
    value = value.replace(-1.0, 1.0 if options.uncertain == "ones" else 0.0)
    if not value.isin([0.0, 1.0]).all():
        bad = sorted(set(value) - {0.0, 1.0})
        raise DatasetError(f"column {options.label!r} holds {bad}, expected 1, 0, -1 (uncertain) or blank")
    patient = table["Path"].str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        first = table.loc[patient.isna(), "Path"].iloc[0]
        raise DatasetError(f"column 'Path' value {first!r} holds no patientNNNNN folder")
    rows = pd.DataFrame(
        {
            "path": [str(image_path(root, p)) for p in table["Path"]],
            "image_id": table["Path"].map(lambda p: "/".join(PurePosixPath(p).parts[1:])),
            "patient_id": patient,
            "domain": table[options.domain_column].astype(str),
            "label": np.where(value == 1.0, options.label.lower(), "negative"),
            "sex": normalise_sex(table["Sex"]),
            "age": pd.to_numeric(table["Age"], errors="coerce"),
            "laterality": "",
            "view": table["AP/PA"],
            "official_split": table["official_split"],
        }
    )
    return Table(rows, ["negative", options.label.lower()], dropped, domain_source=options.domain_column)
