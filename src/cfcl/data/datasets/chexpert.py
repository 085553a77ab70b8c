"""CheXpert (Stanford): ``train.csv`` / ``valid.csv`` with image paths relative to the dataset's parent folder.

Its observation columns hold the CheXpert labeller's values, as MIMIC-CXR's do: 1 positive,
0 negative, -1 uncertain, blank not mentioned. Blank counts as 0 (CheXpert's convention: an
observation the report does not mention is absent); -1 follows the uncertainty policy.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from cfcl.config import StrictModel
from cfcl.data.datasets.common import (
    TRAIN_VAL,
    DatasetError,
    Findings,
    Table,
    findings_table,
    keep,
    normalise_sex,
    read_table,
)

COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
COMPETITION_FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
Uncertain = Literal["zeros", "ones", "ignore"]
# ``split: official``: the validation set (valid.csv) is the usual test set; validation patients come from train.csv
OFFICIAL_SPLITS = {"train": TRAIN_VAL, "valid": "test"}


class CheXpertOptions(StrictModel):
    """Reference filter: frontal PA. CheXpert records no scanner, so the domain is a chosen column
    (default ``AP/PA``: with ``views: [AP, PA]`` the projection becomes the acquisition domain).
    ``findings`` (observation columns) make a multi-label store; empty: the single ``label``."""

    files: list[str] = ["train.csv", "valid.csv"]
    label: str = "Pneumonia"
    findings: Findings = []
    uncertain: Uncertain = "zeros"
    views: list[str] = ["PA"]
    domain_column: str = "AP/PA"


def labeller_values(frame: pd.DataFrame, columns: list[str], source: Path) -> pd.DataFrame:
    """The labeller's cells of ``columns`` as floats 1 / 0 / -1 / NaN (blank); any other value is
    an error naming ``source``, the column and the row."""
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    for column in columns:
        bad = frame[column].notna() & ~values[column].isin([1, 0, -1])
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise DatasetError(
                f"{source}: column {column!r} holds {frame[column].tolist()[row]!r} in row {row + 2}; "
                "expected 1, 0, -1 (uncertain) or blank"
            )
    return values


def resolve_uncertain(values: pd.Series, uncertain: Uncertain) -> pd.Series:
    """Labeller values as a finding: blank -> 0; -1 -> 1 (``ones``), 0 (``zeros``) or NaN (``ignore``: masked)."""
    return values.fillna(0.0).replace(-1.0, {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain])


def image_path(root: Path, csv_path: str) -> Path:
    """CSV paths start with the dataset folder's own name (``CheXpert-v1.0-small/train/...``);
    they are resolved inside ``root`` whatever that folder is called now."""
    parts = PurePosixPath(csv_path).parts
    return root.joinpath(*parts[1:]) if parts and parts[0].lower().startswith("chexpert") else root / csv_path


def load(root: Path, options: CheXpertOptions) -> Table:
    observed = options.findings or [options.label]
    frames = []
    for name in options.files:
        frame = read_table(root / name, COLUMNS + observed + [options.domain_column])
        frame[observed] = labeller_values(frame, observed, root / name)
        frames.append(frame.assign(official_split=Path(name).stem))
    table = pd.concat(frames, ignore_index=True)
    dropped: dict[str, int] = {}
    table = keep(table, table["Frontal/Lateral"] == "Frontal", "not frontal", dropped)
    table = keep(table, table["AP/PA"].isin(options.views), f"AP/PA not in {options.views}", dropped)
    if not options.findings and options.uncertain == "ignore":
        table = keep(table, table[options.label] != -1, f"uncertain {options.label} (policy ignore)", dropped)
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
            "sex": normalise_sex(table["Sex"]),
            "age": pd.to_numeric(table["Age"], errors="coerce"),
            "laterality": "",
            "view": table["AP/PA"],
            "official_split": table["official_split"],
        }
    )
    findings = {name: resolve_uncertain(table[name], options.uncertain) for name in observed}
    split_source = " / ".join(str(root / name) for name in options.files)
    if options.findings:
        return findings_table(rows, findings, dropped, options.domain_column, split_source)
    label = np.where(findings[options.label] == 1.0, options.label.lower(), "negative")
    return Table(
        rows.assign(label=label),
        ["negative", options.label.lower()],
        dropped,
        domain_source=options.domain_column,
        split_source=split_source,
    )
